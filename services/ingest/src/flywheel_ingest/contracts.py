"""Where ingest gets dataset contracts from: the registry (cached), or spec files."""

from __future__ import annotations

import asyncio
import glob
import logging
import time
from pathlib import Path
from typing import Protocol

from flywheel_shared.regcache import RegistryCache, RegistryPort
from flywheel_shared.registry import RegistryClient, RegistryError
from flywheel_shared.spec import DatasetContract, SpecError, load_spec

from .settings import IngestSettings

log = logging.getLogger(__name__)


class ContractSource(Protocol):
    """Looks up dataset contracts by dataset name."""

    def get(self, dataset: str) -> DatasetContract | None:
        """The contract of ``dataset``, or None if no such dataset is declared."""
        ...

    def names(self) -> list[str]:
        """Every declared dataset."""
        ...

    async def refresh_for(self, dataset: str) -> None:
        """Called before answering "unknown dataset": a chance to look again.

        Raises :class:`ContractsUnavailable` when the source cannot be asked and holds nothing.
        """
        ...

    async def refresh(self) -> None:
        """Read every contract again (at start-up, then every :attr:`refresh_every_s`)."""
        ...

    @property
    def refresh_every_s(self) -> float | None:
        """How often the service calls :meth:`refresh` (None: never, the set is fixed)."""
        ...

    def unavailable(self) -> str | None:
        """Readiness: why no contract can be served (None while they can)."""
        ...


class ContractsUnavailable(RuntimeError):
    """The contract source cannot be reached and has no cached contract to offer."""


class StaticContracts:
    """Contracts held in memory (tests, or a fixed set)."""

    def __init__(self, contracts: list[DatasetContract]) -> None:
        self._by_name = {c.name: c for c in contracts}

    async def refresh_for(self, dataset: str) -> None:
        """Nothing to refresh."""

    async def refresh(self) -> None:
        """Nothing to refresh."""

    @property
    def refresh_every_s(self) -> None:
        """Never refreshed: the set is fixed."""
        return None

    def unavailable(self) -> None:
        """Always available."""
        return None

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


class RegistryContracts:
    """Contracts from the registry, through the shared registry cache: a contract once read
    outlives a registry outage; ``refresh`` (every ``refresh_s``, and on demand) reads again.
    """

    def __init__(
        self, client: RegistryPort, *, refresh_s: float = 30.0, min_gap_s: float = 1.0
    ) -> None:
        self.cache = RegistryCache(client, refresh_s=refresh_s, name="ingest-contracts")
        self.refresh_s = refresh_s
        self.min_gap_s = min_gap_s
        self._by_name: dict[str, DatasetContract] = {}
        self._last_try = -1e9
        self.last_error: str | None = None
        self._lock = asyncio.Lock()

    @property
    def refresh_every_s(self) -> float:
        """Contracts are re-read every ``refresh_s``."""
        return self.refresh_s

    def unavailable(self) -> str | None:
        """The registry's last error while nothing is cached."""
        if not self._by_name and self.last_error:
            return f"no contracts: {self.last_error}"
        return None

    def get(self, dataset: str) -> DatasetContract | None:
        """The cached contract of ``dataset``."""
        return self._by_name.get(dataset)

    def names(self) -> list[str]:
        """Every cached dataset."""
        return sorted(self._by_name)

    async def refresh(self) -> None:
        """Re-read every contract from the registry (keeps the cache on failure)."""
        async with self._lock:
            self._last_try = time.monotonic()
            try:
                contracts = await self.cache.contracts(fresh=True)
            except RegistryError as exc:  # unreachable with nothing cached, or refused
                self.last_error = str(exc)
                log.warning("cannot refresh contracts from the registry", extra={"error": str(exc)})
                return
            # Set while the cache answers with its last good copy (the registry is away).
            self.last_error = self.cache.last_error
            # Replacing the objects lets validators notice a changed contract.
            self._by_name = {
                c.name: (old if (old := self._by_name.get(c.name)) == c else c) for c in contracts
            }

    async def refresh_for(self, dataset: str) -> None:
        """Ask the registry again (rate-limited) before calling a dataset unknown."""
        if time.monotonic() - self._last_try >= self.min_gap_s:
            await self.refresh()
        if dataset not in self._by_name and self.last_error is not None:
            raise ContractsUnavailable(
                f"the registry is unreachable ({self.last_error}) and no contract for "
                f"'{dataset}' is cached"
            )


def contract_source(settings: IngestSettings) -> ContractSource:
    """The registry's contracts when ``registry_url`` is set, else the spec files'."""
    if settings.registry_url:
        client = RegistryClient(settings.registry_url, settings.registry_token, actor="ingest")
        return RegistryContracts(client, refresh_s=settings.contracts_refresh_s)
    return load_spec_files(settings.specs)
