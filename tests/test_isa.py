"""nnport.isa: the CPU features that decide numerical paths, read from CPUID (numpy) and /proc/cpuinfo."""

from __future__ import annotations

from nnport import isa


def test_features_are_booleans_for_every_known_feature():
    found = isa.features()
    assert set(found) == set(isa.FEATURES) and all(isinstance(v, bool) for v in found.values())
    if isa.is_x86():
        assert found["avx2"], "the runtimes nnport ships need AVX2 on x86-64"
    assert isa.has_int8_dot_product() == (found["avx512_vnni"] or found["avx_vnni"] or found["amx_int8"])


def test_cpuid_wins_over_proc_cpuinfo(monkeypatch):
    """Under an emulated CPU /proc/cpuinfo is the host's; CPUID (numpy's view) is the CPU the code runs on."""
    isa.features.cache_clear()
    monkeypatch.setattr(isa, "is_x86", lambda: True)
    monkeypatch.setattr(
        isa,
        "_numpy_cpu_features",
        lambda: {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512VNNI": False, "AVX512BF16": False},
    )
    monkeypatch.setattr(isa, "_proc_cpuinfo_flags", lambda: {"avx2", "fma", "avx512f", "avx512_vnni"})
    try:
        found = isa.features()
        assert found["avx2"] and not found["avx512f"] and not found["avx512_vnni"] and not isa.has_int8_dot_product()
        assert isa.describe().endswith(": avx2 fma")
    finally:
        isa.features.cache_clear()


def test_describe_names_the_machine():
    assert isa.describe().startswith(isa.platform.machine() or "unknown")
