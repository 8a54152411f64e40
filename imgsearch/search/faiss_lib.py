"""FAISS, imported with BLAS kernels that suit the CPU (``load()``; every FAISS import of imgsearch goes here).

faiss-cpu's wheels (1.15.1) bundle their own OpenBLAS, 0.3.15 (2021). Its run-time CPU detection does not know
newer Intel cores (a Sapphire Rapids class Xeon here): it falls back to its Prescott (SSE3) kernels, and every
BLAS call of FAISS — the k-means of IVF training, the assignment of added vectors to their cells, batched flat
searches — runs ~5x slower (100,000 vectors assigned to 2,048 cells: 5.1 s, against 1.0 s with the SkylakeX
kernels on the same CPU; a 1M-row ingest 625 s: bench/README.md, "Ingest rate"). numpy's newer OpenBLAS calls the
same CPU SkylakeX. OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when its library loads, so ``load()`` sets it from
the CPU's flags for the import of faiss only (and restores the environment after), unless the user has set it.
A CPU whose flags name neither AVX2+FMA nor AVX-512, or a system without /proc/cpuinfo, keeps OpenBLAS's choice.
"""
from __future__ import annotations

import os
import sys
import threading

ENV = "OPENBLAS_CORETYPE"
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
HASWELL_FLAGS = frozenset({"avx2", "fma"})

_lock = threading.Lock()


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's flags (empty where the file is missing or names none)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def core_for(flags: frozenset[str]) -> str | None:
    """The OpenBLAS kernels for a CPU with ``flags``: SkylakeX (AVX-512), Haswell (AVX2 + FMA) or None (keep
    OpenBLAS's own detection)."""
    if SKYLAKEX_FLAGS <= flags:
        return "SkylakeX"
    if HASWELL_FLAGS <= flags:
        return "Haswell"
    return None


def load():
    """The faiss module, imported once with ``OPENBLAS_CORETYPE`` set to ``core_for(cpu_flags())`` for the import
    (a value the user set wins; nothing is set where faiss was already imported)."""
    if "faiss" in sys.modules:
        return sys.modules["faiss"]
    with _lock:
        if "faiss" in sys.modules:
            return sys.modules["faiss"]
        import numpy  # noqa: F401  (numpy's own OpenBLAS loads first, with its own detection)

        core = None if ENV in os.environ or not sys.platform.startswith("linux") else core_for(cpu_flags())
        if core is None:
            import faiss
            return faiss
        os.environ[ENV] = core
        try:
            import faiss
        finally:
            os.environ.pop(ENV, None)
        return faiss


def blas_core() -> str | None:
    """The kernels the OpenBLAS loaded in this process with faiss uses (e.g. 'SkylakeX'); None where faiss uses
    another BLAS or the library cannot be found (Linux only: read from /proc/self/maps)."""
    import ctypes

    load()
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line and "faiss" in line}
    except OSError:
        return None
    for path in sorted(libs):
        try:
            fn = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        return fn().decode()
    return None
