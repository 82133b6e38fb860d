"""Where the real public datasets are: ``FLOWWARDEN_DATA`` or ``<repo>/../shared/data``.

Tests that use them call :func:`require_shared_data` at module level, so they skip cleanly on a machine
without the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("FLOWWARDEN_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


def require_shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA}", allow_module_level=True)
    return SHARED_DATA
