"""Where nnport keeps its caches (converted models, the fastest-device choices)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$NNPORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/nnport``, else ``~/.cache/nnport``."""
    env = os.environ.get("NNPORT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "nnport"
