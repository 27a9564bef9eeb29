"""Which integer kernels ONNX Runtime's CPU provider runs an INT8 model with, and the session option that keeps
its answers exact on x86 CPUs without VNNI.

Our INT8 models multiply u8 activations by full-range s8 weights. On x86, ORT's u8×s8 kernels are exact where
the CPU has VNNI or AMX-INT8 (``vpdpbusd`` adds four u8×s8 products straight into int32), but on AVX2 and
AVX-512 chips without them (Intel before Cascade Lake, AMD Zen 2/3) they use ``vpmaddubsw``, which adds each
pair of products into a *saturating* int16 (255 × 127 × 2 does not fit): such a unit would compute other
embeddings than ``verify`` saw. ``session.x64quantprecision=1`` (ORT's ``kOrtSessionOptionsAvx2PrecisionMode``:
"x64 SSE4.1/AVX2/AVX512 (with no VNNI) has overflow problem with quantized matrix multiplication with U8S8")
makes the session rewrite each constant s8 weight as u8 (``w + 128``, zero point moved with it: the same
products) so that the exact u8×u8 kernels run. Those are slower (integer MatMuls ≈ 5× slower measured on this
VNNI machine, where the option changes the kernel but not the answer), so it is set only where VNNI is missing.

ARM (Raspberry Pi, Jetson) is unaffected: ORT's ARM64 integer kernels widen each 8-bit product to 16 bits and
add the pairs into int32 (NEON ``umull``/``uadalp``), or add four products straight into int32 (``sdot``/``udot``
with ``asimddp``, ``smmla``/``ummla`` with ``i8mm``); none saturates, and ORT compiles the option out there.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

PRECISION_KEY = "session.x64quantprecision"
EXACT_X86_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
"""/proc/cpuinfo flags with which ORT's x86 u8×s8 kernels add products into int32 (no int16 saturation)."""
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
CPUINFO = Path("/proc/cpuinfo")
_said: set[bool] = set()


@dataclass(frozen=True)
class IntegerPath:
    """How this CPU multiplies an INT8 model's u8 activations by its s8 weights in ONNX Runtime."""

    exact_u8u8: bool
    """Whether sessions of INT8 models set ``session.x64quantprecision=1`` (x86 without VNNI)."""
    description: str


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of ``/proc/cpuinfo`` text (``flags`` on x86, ``Features`` on ARM)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return flags


def read_cpuinfo() -> str:
    """This machine's ``/proc/cpuinfo``; empty where there is none (not Linux)."""
    try:
        return CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def integer_path(cpuinfo: str | None = None, machine: str | None = None) -> IntegerPath:
    """The integer path for ``cpuinfo`` text on ``machine`` (default: this machine's)."""
    machine = (machine if machine is not None else platform.machine()).lower()
    flags = cpu_flags(read_cpuinfo() if cpuinfo is None else cpuinfo)
    if machine not in X86_MACHINES:
        return IntegerPath(False, f"{machine or 'this CPU'}: ORT's integer kernels widen every product and add into "
                                  "32 bits (exact, nothing to set)")
    exact = [f for f in EXACT_X86_FLAGS if f in flags]
    if exact:
        return IntegerPath(False, f"u8×s8 with {'/'.join(exact)} (exact, the fast path)")
    if not flags:
        return IntegerPath(False, "u8×s8, ONNX Runtime's default (CPU flags unknown: /proc/cpuinfo unreadable)")
    return IntegerPath(True, f"u8×u8 ({PRECISION_KEY}=1: no VNNI, so u8×s8 would saturate int16 pairs; slower, "
                             "exact)")


def keep_int8_exact(options: ort.SessionOptions, path: IntegerPath | None = None) -> IntegerPath:
    """Set ``session.x64quantprecision=1`` on an INT8 model's ``ort.SessionOptions`` where this CPU needs it;
    the decision is logged once per process."""
    path = integer_path() if path is None else path
    if path.exact_u8u8:
        options.add_session_config_entry(PRECISION_KEY, "1")
    if path.exact_u8u8 not in _said:
        _said.add(path.exact_u8u8)
        log.info("INT8 integer path: %s", path.description)
    return path
