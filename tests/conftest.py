"""Shared test set-up.

Third-party plugins installed in the environment must not leak into the tests
(pytest's own practice): entry-point autoload is off, and every test starts
from a freshly discovered plugin manager.
"""

from __future__ import annotations

import os

os.environ["NNPORT_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest  # noqa: E402

from nnport import manager  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_plugin_manager():
    """Each test gets a newly discovered manager, so registrations never leak."""
    old = manager.set_plugin_manager(None)
    yield
    manager.set_plugin_manager(old)


def pytest_report_header(config):
    """Which CPU path the numerics take here (AVX2 vs AVX-512, int8 with or without VNNI): in every run's header."""
    from nnport import isa

    dot = "VNNI/AMX" if isa.has_int8_dot_product() else "none (x86 int8 uses 7-bit weights)"
    return f"nnport cpu: {isa.describe()}; int8 dot product: {dot}"
