from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Stack


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(kafka_bootstrap, tmp_path)
    yield s
    s.stop()
