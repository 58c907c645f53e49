"""The fused CPU entropy kernels (csrc/entropy.c): built with the system C compiler on first use,
cached per source, compiler and CPU under the aent cache, and called through ctypes.

Why C: on a CPU, full and clamped entropy are bound by passes over [rows, V] buffers. Eager torch
makes one pass per op through memory; the kernels make two or three over one row held in cache, with
the exp, the mask and the sums fused. ctypes drops the GIL during a call, so rows are split across
torch's thread count with a plain thread pool.

Without a compiler (or with AENT_NATIVE_ENTROPY=0) `kernels()` is None and entropy.py uses its
torch path; both are checked against the same references in tests/test_entropy.py.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from aent_cli.cache import cache_root

SOURCE = Path(__file__).with_name("csrc") / "entropy.c"
_FLAG_SETS = (["-O3", "-march=native"], ["-O3", "-mcpu=native"], ["-O3"])
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
_MIN_ROWS_PER_THREAD = 4
SMALL_BAND = 16384  # brackets up to this many tokens are collected and ranked (see csrc/entropy.c)

_lock = threading.Lock()
_state: dict = {}

_i64, _f32, _ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p


def enabled() -> bool:
    return os.environ.get("AENT_NATIVE_ENTROPY", "1").lower() not in ("0", "false", "no", "off")


def _compiler() -> Optional[str]:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _machine_id() -> str:
    """What -march=native depends on: a cache shared by different CPUs must not share binaries."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as f:
            parts += sorted({line for line in f if line.startswith(("model name", "flags", "Features"))})
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _build(compiler: str) -> Optional[Path]:
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    for flags in _FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, compiler.encode(), version.encode(), " ".join(flags).encode(),
                                         _machine_id().encode()])).hexdigest()[:16]
        target = cache_root() / "kernels" / f"entropy-{key}.so"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", tmp, str(SOURCE), "-lm"],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                os.replace(tmp, target)  # atomic: concurrent builders agree on the result
                return target
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None


def _load(path: Path):
    lib = ctypes.CDLL(str(path))
    lib.aent_scratch_floats.argtypes, lib.aent_scratch_floats.restype = [_i64], _i64
    lib.aent_entropy_forward.argtypes = [_ptr, ctypes.c_int, _i64, _i64, _i64, _i64, _f32, _ptr, _i64, _i64,
                                         _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr]
    lib.aent_entropy_forward.restype = None
    lib.aent_entropy_backward.argtypes = [_ptr, ctypes.c_int, _i64, _i64, _i64, _f32, _ptr, _ptr, _ptr, _ptr,
                                          _ptr, _ptr, _ptr]
    lib.aent_entropy_backward.restype = None
    return lib


def kernels():
    """The loaded library, or None when disabled or no compiler could build it (then torch is used)."""
    if not enabled():
        return None
    with _lock:
        if "lib" not in _state:
            compiler = _compiler()
            try:  # an unwritable cache or a broken toolchain only costs speed
                path = _build(compiler) if compiler else None
                _state["lib"] = _load(path) if path else None
            except (OSError, subprocess.SubprocessError):
                _state["lib"] = None
        return _state["lib"]


def supports(logits: torch.Tensor) -> bool:
    return (logits.device.type == "cpu" and logits.dtype in _DTYPES and logits.is_contiguous()
            and logits.shape[-1] < 2**31 and kernels() is not None)


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _state.get("pool")
        if pool is None or _state.get("workers") != workers:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = _state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aent-entropy")
            _state["workers"] = workers
        return pool


def _over_rows(n: int, vocab: int, call) -> None:
    """call(begin, end, scratch, slot) on contiguous row ranges, one per thread (torch's thread count)."""
    lib = kernels()
    threads = max(1, min(torch.get_num_threads(), n // _MIN_ROWS_PER_THREAD))
    scratch = torch.empty(threads, lib.aent_scratch_floats(vocab), dtype=torch.float32)
    bounds = [n * t // threads for t in range(threads + 1)]
    if threads == 1:
        call(0, n, scratch[0].data_ptr(), 0)
        return
    futures = [_pool(threads).submit(call, bounds[t], bounds[t + 1], scratch[t].data_ptr(), t)
               for t in range(threads)]
    for future in futures:
        future.result()


def forward(rows: torch.Tensor, drop: int, temperature: float, sample_positions: torch.Tensor,
            stats: Optional[Dict[str, int]] = None) -> Tuple[torch.Tensor, ...]:
    """(entropy, log_z, mean, thr, cut) per row of rows [N, V] (fp32 or bf16, contiguous, CPU).
    `stats`, when given, gets the selection's counters added (sampled_rows, count_passes, ranked)."""
    lib = kernels()
    n, vocab = rows.shape
    f32 = dict(dtype=torch.float32)
    entropy, log_z, mean, thr = (torch.empty(n, **f32) for _ in range(4))
    cut = torch.empty(n, dtype=torch.int64)
    positions = sample_positions.to(torch.int32).contiguous()
    counters = torch.zeros(max(1, torch.get_num_threads()), 3, dtype=torch.int64)

    def call(begin: int, end: int, scratch: int, slot: int) -> None:
        lib.aent_entropy_forward(rows.data_ptr(), _DTYPES[rows.dtype], begin, end, vocab, drop, temperature,
                                 positions.data_ptr(), positions.numel(), SMALL_BAND, scratch, entropy.data_ptr(),
                                 log_z.data_ptr(), mean.data_ptr(), thr.data_ptr(), cut.data_ptr(),
                                 counters[slot].data_ptr())

    _over_rows(n, vocab, call)
    if stats is not None:
        for key, value in zip(("sampled_rows", "count_passes", "ranked"), counters.sum(0).tolist()):
            stats[key] = stats.get(key, 0) + value
    return entropy, log_z, mean, thr, cut


def backward(rows: torch.Tensor, temperature: float, grad_out: torch.Tensor, log_z: torch.Tensor,
             mean: torch.Tensor, thr: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """d(sum grad_out * H) / d rows, in rows' dtype."""
    lib = kernels()
    n, vocab = rows.shape
    grad = torch.empty_like(rows)
    grad_out = grad_out.to(torch.float32).contiguous()

    def call(begin: int, end: int, scratch: int, slot: int) -> None:
        lib.aent_entropy_backward(rows.data_ptr(), _DTYPES[rows.dtype], begin, end, vocab, temperature,
                                  grad_out.data_ptr(), log_z.data_ptr(), mean.data_ptr(), thr.data_ptr(),
                                  cut.data_ptr(), scratch, grad.data_ptr())

    _over_rows(n, vocab, call)
    return grad
