from __future__ import annotations

import pytest

from flywheel_ingest.contracts import ContractsUnavailable, RegistryContracts
from flywheel_shared.registry import RegistryUnavailable
from flywheel_shared.spec import DatasetContract


class FakeRegistry:
    def __init__(self, contracts: list[DatasetContract]) -> None:
        self.contracts = contracts
        self.down = False
        self.calls = 0

    async def list_contracts(self) -> list[DatasetContract]:
        self.calls += 1
        if self.down:
            raise RegistryUnavailable(0, "unreachable", "connection refused")
        return self.contracts


async def test_cached_contract_outlives_a_registry_outage(contract: DatasetContract) -> None:
    registry = FakeRegistry([contract])
    source = RegistryContracts(registry, min_gap_s=0)  # type: ignore[arg-type]
    await source.refresh()
    assert source.get("tx") == contract
    registry.down = True
    await source.refresh()
    assert source.get("tx") == contract and source.last_error is not None
    await source.refresh_for("tx")  # cached: no error


async def test_unknown_dataset_with_registry_down_is_a_clear_error(
    contract: DatasetContract,
) -> None:
    registry = FakeRegistry([contract])
    registry.down = True
    source = RegistryContracts(registry, min_gap_s=0)  # type: ignore[arg-type]
    with pytest.raises(ContractsUnavailable, match=r"unreachable.*no contract for 'tx'"):
        await source.refresh_for("tx")


async def test_new_dataset_is_found_on_demand_rate_limited(contract: DatasetContract) -> None:
    registry = FakeRegistry([])
    source = RegistryContracts(registry, min_gap_s=60)  # type: ignore[arg-type]
    await source.refresh()
    registry.contracts = [contract]
    await source.refresh_for("tx")  # within min_gap_s: no new call
    assert source.get("tx") is None and registry.calls == 1
    source.min_gap_s = 0
    await source.refresh_for("tx")
    assert source.get("tx") == contract
