"""One outage-tolerant cache of the registry's read API, used by every service that reads it.

The rules, in the order a read meets them:

- A read answers from the cache when its copy is younger than ``refresh_s`` (``fresh=True``
  skips this and asks the registry).
- Otherwise it asks the registry. Callers asking for the same thing at the same time share
  one request (a caller cancelled while waiting does not cancel it for the others).
- When the registry is unreachable (:class:`RegistryUnavailable`) a read answers with the
  last good copy: logged once per outage, ``flywheel_registry_cache_stale{cache}`` is 1 until
  the registry answers again, ``flywheel_registry_cache_errors_total{cache}`` counts the
  failed requests. It raises :class:`RegistryUnavailable` only when it has no copy at all,
  or when the copy is *outdated*: an event (:meth:`RegistryCache.on_event`) or
  :meth:`RegistryCache.invalidate` said it changed, and a caller following events (serving)
  must retry rather than act on aliases it knows have moved.
- Any other :class:`RegistryError` propagates; a 404 also drops the copy.
- Versions are immutable: cached forever once fetched. Artifacts are content-addressed:
  cached in an LRU bounded by bytes.

``start()`` runs a :class:`~flywheel_shared.tasks.Supervised` refresher that re-reads every
copy each ``refresh_s`` (and at once after :meth:`RegistryCache.on_event`), so that reads
seldom wait for the registry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .events import Event, ModelAliasChanged, ModelVersionRegistered
from .metrics import REGISTRY_CACHE_ERRORS, REGISTRY_CACHE_STALE
from .registry import ModelInfo, ModelVersion, RegistryError, RegistryUnavailable
from .spec import DatasetContract, ModelSpec
from .tasks import Supervised

log = logging.getLogger(__name__)
T = TypeVar("T")
Key = tuple[str, str]
"""(kind, name) of a cached copy: ``("model", "fraud")``, ``("contracts", "")``..."""
_MUTABLE = ("models", "model", "contracts", "contract")


class RegistryPort(Protocol):
    """The registry's read API (:class:`~flywheel_shared.registry.RegistryClient`)."""

    async def list_models(self) -> list[ModelInfo]:
        """Every model (aliases, no spec)."""
        ...

    async def get_model(self, name: str) -> ModelInfo:
        """One model with its spec and aliases."""
        ...

    async def get_spec(self, name: str) -> ModelSpec:
        """A model's spec."""
        ...

    async def get_contract(self, dataset: str) -> DatasetContract:
        """A dataset's contract."""
        ...

    async def list_contracts(self) -> list[DatasetContract]:
        """Every dataset contract."""
        ...

    async def get_version(self, model: str, version: int) -> ModelVersion:
        """One version."""
        ...

    async def download_artifact(self, sha256: str) -> bytes:
        """Artifact bytes, sha256 verified."""
        ...


@dataclass
class _Copy(Generic[T]):
    value: T
    at: float
    """Monotonic time of the request that brought it."""
    fetch: Callable[[], Awaitable[T]]
    outdated: bool = False


class RegistryCache:
    """The registry's answers, kept for ``refresh_s`` and through registry outages."""

    def __init__(
        self,
        client: RegistryPort,
        *,
        refresh_s: float = 30.0,
        name: str = "registry-cache",
        max_artifact_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.clock = clock
        self.refresh_s = refresh_s
        self.name = name
        self.max_artifact_bytes = max_artifact_bytes
        self.last_error: str | None = None
        """Why the registry is unreachable (None once it answered again)."""
        self._copies: dict[Key, _Copy[Any]] = {}
        self._marks: dict[Key, int] = {}
        self._inflight: dict[Key, tuple[int, asyncio.Future[Any]]] = {}
        self._specs: dict[str, tuple[str, ModelSpec]] = {}
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self._artifacts: OrderedDict[str, bytes] = OrderedDict()
        self._artifact_bytes = 0
        self._last_ok: float | None = None
        self._outage_since: float | None = None
        self._refresher = Supervised(name, self._refresh, every_s=refresh_s)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Refresh the cached copies in the background, every ``refresh_s``."""
        self._refresher.start()

    async def stop(self) -> None:
        """Stop refreshing."""
        await self._refresher.stop()

    def alive(self) -> str | None:
        """None while the background refresher runs, else why not."""
        return self._refresher.alive()

    @property
    def stale_for_s(self) -> float | None:
        """Seconds since the registry last answered (None: it never did)."""
        return None if self._last_ok is None else self.clock() - self._last_ok

    # -- reads -----------------------------------------------------------------------------

    async def models(self, *, fresh: bool = False) -> list[ModelInfo]:
        """Every model, with its spec and aliases."""
        return await self._read(("models", ""), self._fetch_models, fresh)

    async def model(self, name: str, *, fresh: bool = False) -> ModelInfo:
        """One model, with its spec and aliases."""
        return await self._read(("model", name), functools.partial(self._fetch_model, name), fresh)

    async def spec(self, name: str, *, fresh: bool = False) -> ModelSpec:
        """A model's spec."""
        spec = (await self.model(name, fresh=fresh)).spec
        assert spec is not None  # _with_spec fills it in
        return spec

    async def contract(self, dataset: str, *, fresh: bool = False) -> DatasetContract:
        """A dataset's contract."""
        fetch = functools.partial(self.client.get_contract, dataset)
        return await self._read(("contract", dataset), fetch, fresh)

    async def contracts(self, *, fresh: bool = False) -> list[DatasetContract]:
        """Every dataset contract."""
        return await self._read(("contracts", ""), self.client.list_contracts, fresh)

    async def version(self, model: str, version: int) -> ModelVersion:
        """One version (immutable: asked for once)."""
        known = self._versions.get((model, version))
        if known is not None:
            return known
        fetch = functools.partial(self.client.get_version, model, version)
        mv: ModelVersion = await self._shared(("version", f"{model}/{version}"), fetch)
        self._versions[(model, version)] = mv
        return mv

    async def artifact(self, sha256: str) -> bytes:
        """An artifact's bytes (content-addressed: kept while the byte budget allows)."""
        data = self._artifacts.get(sha256)
        if data is not None:
            self._artifacts.move_to_end(sha256)
            return data
        fetch = functools.partial(self.client.download_artifact, sha256)
        data = await self._shared(("artifact", sha256), fetch)
        self._keep_artifact(sha256, data)
        return data

    def cached_model(self, name: str) -> ModelInfo | None:
        """The newest copy of a model the cache holds (no I/O)."""
        found: list[tuple[float, ModelInfo]] = []
        if (one := self._copies.get(("model", name))) is not None:
            found.append((one.at, one.value))
        if (listed := self._copies.get(("models", ""))) is not None:
            found += [(listed.at, m) for m in listed.value if m.name == name]
        return max(found, key=lambda f: f[0])[1] if found else None

    def cached_specs(self) -> list[ModelSpec]:
        """Every model spec the cache holds (no I/O)."""
        return [spec for _, spec in self._specs.values()]

    # -- invalidation ----------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """An alias moved or a version was registered: that model's copies are outdated."""
        if isinstance(event, ModelAliasChanged | ModelVersionRegistered):
            self.invalidate(event.model)

    def invalidate(self, model: str | None = None) -> None:
        """Mark ``model``'s copies (None: every model and contract) outdated; refresh them soon.

        The next read of an outdated copy asks the registry, and raises while it is away.
        """
        if model is None:
            keys = [k for k in {*self._copies, *self._inflight} if k[0] in _MUTABLE]
        else:
            keys = [("models", ""), ("model", model)]
        for key in keys:
            # A request already under way may have been answered before the change: what it
            # brings is outdated too, and later readers do not share it.
            self._marks[key] = self._marks.get(key, 0) + 1
            if (copy := self._copies.get(key)) is not None:
                copy.outdated = True
        self._refresher.wake()

    # -- machinery -------------------------------------------------------------------------

    async def _read(self, key: Key, fetch: Callable[[], Awaitable[T]], fresh: bool) -> T:
        copy = self._copies.get(key)
        if (
            copy is not None
            and not fresh
            and not copy.outdated
            and self.clock() - copy.at < self.refresh_s
        ):
            return copy.value
        try:
            return await self._shared(key, fetch, store=True)
        except RegistryUnavailable:
            copy = self._copies.get(key)
            if copy is None or copy.outdated:
                raise
            return copy.value
        except RegistryError as exc:
            if exc.status == 404:
                self._copies.pop(key, None)
            raise

    async def _shared(
        self, key: Key, fetch: Callable[[], Awaitable[T]], *, store: bool = False
    ) -> T:
        """One request per key at a time; ``store``: keep the answer as the key's copy."""
        generation = self._marks.get(key, 0)
        running = self._inflight.get(key)
        if running is None or running[0] != generation:
            future = asyncio.ensure_future(self._ask(key, generation, fetch, store))
            running = (generation, future)
            self._inflight[key] = running
            future.add_done_callback(functools.partial(self._landed, key, running))
        result: T = await asyncio.shield(running[1])
        return result

    def _landed(self, key: Key, running: tuple[int, asyncio.Future[Any]], _: object) -> None:
        if self._inflight.get(key) is running:
            del self._inflight[key]
        future = running[1]
        if not future.cancelled():
            future.exception()  # retrieved: every caller may have given up waiting

    async def _ask(
        self, key: Key, generation: int, fetch: Callable[[], Awaitable[T]], store: bool
    ) -> T:
        try:
            value = await fetch()
        except RegistryUnavailable as exc:
            self._unreachable(exc)
            raise
        self._reachable()
        if store:
            outdated = self._marks.get(key, 0) != generation
            self._copies[key] = _Copy(value, self.clock(), fetch, outdated)
        return value

    def _unreachable(self, exc: RegistryUnavailable) -> None:
        REGISTRY_CACHE_ERRORS.labels(self.name).inc()
        self.last_error = str(exc)
        if self._outage_since is None:
            self._outage_since = self.clock()
            REGISTRY_CACHE_STALE.labels(self.name).set(1)
            log.warning(
                "registry unreachable; answering with cached copies",
                extra={"cache": self.name, "error": str(exc)},
            )

    def _reachable(self) -> None:
        self._last_ok = self.clock()
        self.last_error = None
        if self._outage_since is not None:
            log.info(
                "registry reachable again",
                extra={
                    "cache": self.name,
                    "outage_s": round(self._last_ok - self._outage_since, 1),
                },
            )
            self._outage_since = None
            REGISTRY_CACHE_STALE.labels(self.name).set(0)

    async def _fetch_models(self) -> list[ModelInfo]:
        return [await self._with_spec(m) for m in await self.client.list_models()]

    async def _fetch_model(self, name: str) -> ModelInfo:
        return await self._with_spec(await self.client.get_model(name))

    async def _with_spec(self, info: ModelInfo) -> ModelInfo:
        """``info`` with its spec (the model list has none: asked once per spec hash)."""
        if info.spec is not None:
            self._specs[info.name] = (info.spec_sha256, info.spec)
            return info
        known = self._specs.get(info.name)
        if known is not None and known[0] == info.spec_sha256:
            spec = known[1]
        else:
            spec = await self.client.get_spec(info.name)
            self._specs[info.name] = (info.spec_sha256, spec)
        return info.model_copy(update={"spec": spec})

    def _keep_artifact(self, sha256: str, data: bytes) -> None:
        if sha256 in self._artifacts or len(data) > self.max_artifact_bytes:
            return
        self._artifacts[sha256] = data
        self._artifact_bytes += len(data)
        while self._artifact_bytes > self.max_artifact_bytes:
            _, dropped = self._artifacts.popitem(last=False)
            self._artifact_bytes -= len(dropped)

    async def _refresh(self) -> None:
        """The refresher's round: re-read the copies that are outdated or half a period old."""
        now = self.clock()
        for key, copy in list(self._copies.items()):
            if not copy.outdated and now - copy.at < self.refresh_s / 2:
                continue
            try:
                await self._read(key, copy.fetch, fresh=True)
            except RegistryError:
                pass  # a 404 dropped the copy; anything else is for the readers to see
            if self._outage_since is not None:
                return  # logged once; the next round (or a read) tries again
