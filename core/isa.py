"""Which x86 instruction sets this CPU has, for choices and records that depend on them.

Numerics differ between CPUs that are equally correct: AVX2 and AVX-512 kernels sum
in different orders, and int8 kernels without VNNI multiply u8 by s8 with
``vpmaddubsw``, whose int16 pair sums saturate (so quantizers use 7-bit weights
there).  Code that must choose by CPU (the OpenVINO plugin's NNCF overflow fix)
and tests or reports that must say which path ran ask here.

Features come from CPUID as numpy's runtime dispatch sees it
(``numpy._core._multiarray_umath.__cpu_features__``), which also holds under an
emulated CPU (``qemu-x86_64 -cpu EPYC-Rome``); features numpy does not track
(``avx_vnni``, AMX) come from ``/proc/cpuinfo``.  Nothing here imports a runtime.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# nnport name -> numpy's CPUID feature name (None: numpy does not track it)
FEATURES: dict[str, str | None] = {
    "avx2": "AVX2",
    "fma": "FMA3",
    "avx512f": "AVX512F",
    "avx512_vnni": "AVX512VNNI",
    "avx512_bf16": "AVX512BF16",
    "avx_vnni": None,
    "amx_tile": None,
    "amx_int8": None,
    "amx_bf16": None,
}


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@functools.lru_cache(maxsize=1)
def features() -> dict[str, bool]:
    """``{feature: present}`` for ``FEATURES`` (all False off x86 or where nothing is readable)."""
    found = dict.fromkeys(FEATURES, False)
    if not is_x86():
        return found
    cpuid = _numpy_cpu_features()
    flags = _proc_cpuinfo_flags()
    for name, numpy_name in FEATURES.items():
        if numpy_name is not None and numpy_name in cpuid:
            found[name] = bool(cpuid[numpy_name])
        else:
            found[name] = name in flags
    return found


def has_int8_dot_product() -> bool:
    """VNNI or AMX: u8*s8 dot products accumulate in int32 without int16 saturation."""
    f = features()
    return f["avx512_vnni"] or f["avx_vnni"] or f["amx_int8"]


def describe() -> str:
    """One line for test messages and reports, e.g. ``x86_64: avx2 fma avx512f avx512_vnni``."""
    present = [k for k, v in features().items() if v]
    return f"{platform.machine() or 'unknown'}: {' '.join(present) or 'none of ' + ' '.join(FEATURES)}"


def _numpy_cpu_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy >= 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__  # type: ignore[no-redef]  # numpy 1.x
        except ImportError:
            return {}
    return dict(__cpu_features__)


def _proc_cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())
