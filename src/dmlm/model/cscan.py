"""The fused CPU selective scan of ``selective_scan.c``: compiled once per machine, called by ctypes.

The C file is built with the system's C compiler (``$CC``, else ``cc``) into
``$DMLM_CACHE`` (default ``~/.cache/dmlm``), under a name that hashes the source, the flags, the
compiler's version and the CPU's instruction-set flags (a home folder shared by different cluster
nodes gets one build per CPU kind, as ``-march=native`` needs); built in a temporary file, then
renamed, so concurrent jobs never load a half-written library. ``library()`` returns None, once
saying why, where no compiler works: ``mamba_scan`` then keeps its PyTorch scan.

ctypes releases the GIL during a call, so ``threads`` > 1 splits the batch rows across Python
threads, each running the C loop on its own rows.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("selective_scan.c")
# -ffast-math lets GCC call glibc's vectorised expf (libmvec) in the state loop; it is given to the
# compile step only: linking a shared library with it would switch the whole process to
# flush-to-zero (crtfastmath.o)
COMPILE = ["-O3", "-ffast-math", "-fopenmp-simd", "-fPIC", "-march=native"]
LINK = ["-shared", "-lm"]
log = logging.getLogger(__name__)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "scan.o", Path(tmp) / "scan.so"
        for cmd in ([compiler, "-c", *COMPILE, str(SOURCE), "-o", str(obj)], [compiler, str(obj), "-o", str(lib), *LINK]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise OSError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        os.replace(lib, target)


@lru_cache(maxsize=None)
def library():
    """The loaded library, or None (logged once) where it cannot be built."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        log.warning("no C compiler (cc or $CC) found: Mamba on the CPU uses the slower PyTorch scan")
        return None
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), *COMPILE, *LINK, version, _cpu_flags(), platform.machine()]).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("DMLM_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dmlm")
    target = cache / f"selective_scan-{key}.so"
    try:
        if not target.exists():
            _build(compiler, target)
        lib = ctypes.CDLL(str(target))
    except OSError as err:
        log.warning("the fused CPU scan could not be built (%s): Mamba on the CPU uses the slower PyTorch scan", err)
        return None
    sizes = [ctypes.c_long] * 6  # L, B, D, N, first row, end row
    lib.scan_forward.argtypes = [ctypes.c_void_p] * 8 + sizes
    lib.scan_backward.argtypes = [ctypes.c_void_p] * 13 + sizes
    lib.scan_forward.restype = lib.scan_backward.restype = ctypes.c_int
    return lib


def _ptr(t: torch.Tensor | None):
    """The address the C loop reads or writes: only ever of a contiguous fp32 CPU tensor."""
    if t is None:
        return None
    if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
        raise ValueError(f"the fused CPU scan takes contiguous fp32 CPU tensors, not {t.dtype} {tuple(t.stride())} on {t.device}")
    return t.data_ptr()


def _over_rows(fn, args, sizes, batch: int) -> None:
    """``fn(*args, *sizes, b0, b1)`` over the batch rows, split across torch's thread count."""
    parts = max(1, min(torch.get_num_threads(), batch))
    bounds = [batch * i // parts for i in range(parts + 1)]

    def rows(i: int) -> None:
        if fn(*args, *sizes, bounds[i], bounds[i + 1]):
            raise MemoryError("the fused CPU scan could not allocate its state buffer")

    if parts == 1:
        rows(0)
        return
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(rows, range(parts)))


def _sizes(delta, x, A, Bm, C) -> tuple[int, int, int, int]:
    """(L, B, D, N), after checking that the shapes agree (the C loop trusts them)."""
    length, batch, channels = delta.shape
    state = A.shape[1]
    if x.shape != delta.shape or A.shape != (channels, state) or Bm.shape != (length, batch, state) or C.shape != Bm.shape:
        raise ValueError(f"fused CPU scan: shapes disagree: delta, x {tuple(delta.shape)}, {tuple(x.shape)}; "
                         f"A {tuple(A.shape)}; B, C {tuple(Bm.shape)}, {tuple(C.shape)}")
    return length, batch, channels, state


def forward(delta, x, A, Bm, C, keep_states: bool):
    """(y: L x B x D, states: L x B x D x N or None, last: B x D x N); inputs fp32, contiguous."""
    length, batch, channels, state = _sizes(delta, x, A, Bm, C)
    y = delta.new_empty(length, batch, channels)
    states = delta.new_empty(length, batch, channels, state) if keep_states else None
    last = delta.new_empty(batch, channels, state)
    args = [_ptr(t) for t in (delta, x, A, Bm, C, y, states, last)]
    _over_rows(library().scan_forward, args, (length, batch, channels, state), batch)
    return y, states, last


def backward(delta, x, A, Bm, C, states, gy, g_last):
    """Gradients (delta, x, A, Bm, C) of ``forward``; ``g_last`` may be None."""
    length, batch, channels, state = _sizes(delta, x, A, Bm, C)
    if states.shape != (length, batch, channels, state) or gy.shape != delta.shape or (
        g_last is not None and g_last.shape != states.shape[1:]
    ):
        raise ValueError(f"fused CPU scan: states {tuple(states.shape)} or output gradient {tuple(gy.shape)} do not fit")
    g_delta, g_x = torch.empty_like(delta), torch.empty_like(x)
    g_a_rows = delta.new_zeros(batch, channels, state)
    g_b, g_c = torch.zeros_like(Bm), torch.zeros_like(C)
    args = [_ptr(t) for t in (delta, x, A, Bm, C, states, gy, g_last, g_delta, g_x, g_a_rows, g_b, g_c)]
    _over_rows(library().scan_backward, args, (length, batch, channels, state), batch)
    return g_delta, g_x, g_a_rows.sum(0), g_b, g_c
