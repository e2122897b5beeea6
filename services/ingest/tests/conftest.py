from __future__ import annotations

import pytest
from ingest_support import fraudless_contract

from flywheel_shared.spec import DatasetContract


@pytest.fixture
def contract() -> DatasetContract:
    return fraudless_contract()
