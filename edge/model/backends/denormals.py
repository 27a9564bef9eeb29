"""Flush subnormal floats to zero while the model runs (x86-64 with glibc; elsewhere a no-op).

Swin's window attention masks logits with -100 before the softmax, and sharp random or trained logits do
the same: about a quarter of the attention probabilities come out as subnormals (~1e-44). An x86 core
takes a microcode assist for every subnormal operand, so the probabilities x values MatMul that follows
ran ~100x slower than on normal numbers (0.5 vs 55 ms for one layer; BENCHMARKS.md, *Subnormals*).
Flush-to-zero + denormals-are-zero (MXCSR bits) change those products by < 1e-38.

ONNX Runtime's ``session.set_denormal_as_zero`` sets the bits on its own pool threads and, as a side
effect, permanently on the thread that creates the session; the thread that calls ``run`` (the daemon's
analysis thread, a pool worker of ``analyze``) is not covered. :func:`flush_denormals` sets them around
one model call on the calling thread and restores the caller's mode after it, so numpy code on the same
thread keeps IEEE semantics; :func:`keep_float_mode` undoes ORT's side effect on the creating thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Iterator
from contextlib import contextmanager

FTZ_DAZ = 0x8040
"""MXCSR bit 15 (flush to zero) and bit 6 (denormals are zero)."""


class _FenvX86_64(ctypes.Structure):
    """glibc's x86-64 ``fenv_t``: the x87 environment (28 bytes) followed by MXCSR."""

    _fields_ = [("x87", ctypes.c_uint32 * 7), ("mxcsr", ctypes.c_uint32)]


def _load_libm() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        probe = _FenvX86_64()
        return libm if libm.fegetenv(ctypes.byref(probe)) == 0 and probe.mxcsr & 0x1F80 else None
    except (OSError, AttributeError):  # no glibc libm: leave the float mode alone
        return None


_LIBM = _load_libm()


def supported() -> bool:
    """Whether this platform's float mode can be set here (x86-64 Linux with glibc)."""
    return _LIBM is not None


def _get() -> _FenvX86_64 | None:
    if _LIBM is None:
        return None
    env = _FenvX86_64()
    return env if _LIBM.fegetenv(ctypes.byref(env)) == 0 else None


def _set(env: _FenvX86_64) -> None:
    if _LIBM is not None:
        _LIBM.fesetenv(ctypes.byref(env))


def flushing() -> bool:
    """Whether the calling thread currently flushes subnormals (FTZ and DAZ both set)."""
    env = _get()
    return env is not None and env.mxcsr & FTZ_DAZ == FTZ_DAZ


@contextmanager
def keep_float_mode() -> Iterator[None]:
    """Restore the calling thread's float mode after the block, whatever the block set."""
    saved = _get()
    try:
        yield
    finally:
        if saved is not None:
            _set(saved)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush subnormals to zero on the calling thread for the duration of the block."""
    saved = _get()
    if saved is None:
        yield
        return
    flushed = _FenvX86_64.from_buffer_copy(saved)
    flushed.mxcsr |= FTZ_DAZ
    _set(flushed)
    try:
        yield
    finally:
        _set(saved)
