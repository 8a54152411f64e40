"""imgsearch.search.faiss_lib: FAISS imported with OpenBLAS kernels chosen from the CPU's flags (faiss-cpu's bundled
OpenBLAS 0.3.15 falls back to SSE3 kernels on newer Intel CPUs), a user's OPENBLAS_CORETYPE respected, and the
environment left as it was. Each import is checked in a fresh interpreter: OpenBLAS reads the variable once."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from imgsearch.search import faiss_lib

PROBE = ("import json, os; from imgsearch.search import faiss_lib; faiss_lib.load(); "
         "print(json.dumps({'core': faiss_lib.blas_core(), 'env': os.environ.get('OPENBLAS_CORETYPE')}))")


def probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != faiss_lib.ENV}
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**clean, **env},
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_core_for_flags():
    assert faiss_lib.core_for(frozenset("sse4_2 avx avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl".split())) \
        == "SkylakeX"
    assert faiss_lib.core_for(frozenset("sse4_2 avx avx2 fma avx512f".split())) == "Haswell"   # AVX-512 incomplete
    assert faiss_lib.core_for(frozenset("sse4_2 avx avx2 fma".split())) == "Haswell"
    assert faiss_lib.core_for(frozenset("sse4_2 avx".split())) is None
    assert faiss_lib.core_for(frozenset()) is None


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\n"
                 "flags\t\t: fpu\n")
    assert faiss_lib.cpu_flags(str(f)) == frozenset({"fpu", "sse2", "avx2", "fma"})
    assert faiss_lib.cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo and /proc/self/maps (Linux)")
def test_faiss_blas_uses_the_cpus_kernels_and_leaves_the_environment():
    want = faiss_lib.core_for(faiss_lib.cpu_flags())
    got = probe()
    if got["core"] is None:
        pytest.skip("this faiss does not use a bundled OpenBLAS (nothing to choose)")
    assert got["env"] is None                       # set for the import only
    if want is None:
        pytest.skip("a CPU without AVX2: OpenBLAS's own detection is kept")
    assert got["core"] == want, got                 # not OpenBLAS 0.3.15's Prescott fallback


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps (Linux)")
def test_a_users_openblas_coretype_wins():
    got = probe(OPENBLAS_CORETYPE="Prescott")
    if got["core"] is None:
        pytest.skip("this faiss does not use a bundled OpenBLAS")
    assert got == {"core": "Prescott", "env": "Prescott"}
