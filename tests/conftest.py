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
