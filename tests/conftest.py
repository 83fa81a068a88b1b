from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "the_last_ferry.fountain"


@pytest.fixture
def example_path() -> Path:
    return EXAMPLE


def pytest_configure(config) -> None:
    """Renders made by the tests record their stage times for estimates, and the ltx engine
    keeps its compile caches, under AIPROD_CACHE: point it at a folder of this run, so the
    tests never write into the user's own ~/.cache/aiprod-post."""
    if "AIPROD_CACHE" not in os.environ:
        os.environ["AIPROD_CACHE"] = tempfile.mkdtemp(prefix="aiprod-test-cache-")
        _MADE.append(os.environ["AIPROD_CACHE"])


#: the cache folder this run made (removed when it ends: each run left one in /tmp)
_MADE: list[str] = []


def pytest_unconfigure(config) -> None:
    for folder in _MADE:
        shutil.rmtree(folder, ignore_errors=True)
