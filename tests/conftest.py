from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "the_last_ferry.fountain"


@pytest.fixture
def example_path() -> Path:
    return EXAMPLE
