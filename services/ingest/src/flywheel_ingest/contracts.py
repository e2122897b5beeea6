"""Where ingest gets dataset contracts from (a port; the registry becomes a source later)."""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Protocol

from flywheel_shared.spec import DatasetContract, SpecError, load_spec

log = logging.getLogger(__name__)


class ContractSource(Protocol):
    """Looks up dataset contracts by dataset name."""

    def get(self, dataset: str) -> DatasetContract | None:
        """The contract of ``dataset``, or None if no such dataset is declared."""
        ...

    def names(self) -> list[str]:
        """Every declared dataset."""
        ...


class StaticContracts:
    """Contracts held in memory (tests, or a fixed set)."""

    def __init__(self, contracts: list[DatasetContract]) -> None:
        self._by_name = {c.name: c for c in contracts}

    def get(self, dataset: str) -> DatasetContract | None:
        """The contract of ``dataset``, if declared."""
        return self._by_name.get(dataset)

    def names(self) -> list[str]:
        """Every declared dataset."""
        return sorted(self._by_name)


def load_spec_files(pattern: str) -> StaticContracts:
    """Contracts from the model spec files matching a glob (comma-separated globs allowed)."""
    contracts: dict[str, DatasetContract] = {}
    for pat in pattern.split(","):
        for path in sorted(glob.glob(pat.strip())):
            try:
                spec = load_spec(Path(path))
            except SpecError as exc:
                raise SpecError(f"{path}: {exc}") from exc
            known = contracts.get(spec.dataset.name)
            if known is not None and known != spec.dataset:
                raise SpecError(
                    f"{path}: dataset '{spec.dataset.name}' declared twice, differently"
                )
            contracts[spec.dataset.name] = spec.dataset
    if not contracts:
        log.warning("no model specs found", extra={"pattern": pattern})
    return StaticContracts(list(contracts.values()))
