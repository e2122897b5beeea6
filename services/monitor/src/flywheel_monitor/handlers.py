"""What each agent does with one message of its topic (run by :class:`.dispatch.Dispatcher`).

- ``predictions``: drift, estimates, rollout evidence (:class:`.watch.Watcher`); each
  prediction with a record id is repartitioned onto ``monitor.join``;
- ``labels``: checked against their dataset contract, repartitioned onto ``monitor.join``;
- ``join``: the label join (:class:`.joiner.JoinPartition`), pairs sent to ``monitor.signals``;
- ``signals``: live label metrics, retrain episodes, verdicts (:class:`.brain.Brain`);
- ``versions`` / ``aliases``: refresh the registry cache, calibrate new versions, apply
  alias moves (once per event id).

Per-model state (``watch``, ``brain``) remembers the last input offset it applied, so a message
re-read after a crash is not applied twice; decisions are published (and acknowledged) before
the state that remembers them is written.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import TableT

from flywheel_shared.events import (
    LabelsReceived,
    ModelAliasChanged,
    ModelVersionRegistered,
    PredictionsLogged,
)
from flywheel_shared.validation import label_errors

from .aliases import AliasChanges
from .brain import Brain, BrainState
from .calibrations import VersionRef
from .dispatch import Dispatcher
from .joiner import JoinPartition, group_by_model, join_partition, parse_stored_key, stored_key
from .lookups import FeatureChecks, Lookups
from .messages import Unprocessable, decoded, is_join, is_signal, loaded
from .metrics import JOIN, JOIN_BACKLOG, JOIN_EXPIRED, LABELS
from .runtime import Monitor
from .watch import Watcher, score_of
from .watch_state import WatchState

# The records these log keep the logger name they had when this code lived in app.py.
log = logging.getLogger("flywheel_monitor.app")


@dataclass
class Handlers:
    """The agents' handlers, with the topics and tables they write."""

    mon: Monitor
    dispatch: Dispatcher
    lookups: Lookups
    alias_changes: AliasChanges
    join: faust.TopicT  # monitor.join (by record id)
    signals: faust.TopicT  # monitor.signals (by model)
    watch_table: TableT[bytes, bytes]
    join_table: TableT[bytes, bytes]
    brain_table: TableT[bytes, bytes]
    checks: FeatureChecks = field(default_factory=FeatureChecks)

    # -- predictions: drift, estimates, rollout evidence; repartition for the join ------------

    async def predictions(self, event: Any) -> None:
        mon, P = self.mon, self.mon.settings.partitions
        ev = decoded(event, PredictionsLogged, mon.names)
        spec = await self.lookups.spec_of(ev.model)
        self.checks.check(ev, spec)
        # The join first: it is idempotent, so it is sent again on every redelivery.
        parts: dict[int, list[list[Any]]] = {}
        dataset = spec.dataset.name
        for p in ev.predictions:
            if p.record_id is None:
                continue
            item = [
                dataset,
                p.record_id,
                ev.model,
                p.version,
                p.route,
                score_of(p.output),
                p.at.timestamp(),
                p.prediction_id,
            ]
            parts.setdefault(join_partition(dataset, p.record_id, P), []).append(item)
        for part, items in parts.items():
            await self.join.send(key=None, value=orjson.dumps({"p": items}), partition=part)
        msg = event.message
        key = ev.model.encode()
        state = mon.watch_mem.get(ev.model)
        if state is None:
            raw = self.watch_table.get(key)
            state = WatchState.from_bytes(raw) if raw else WatchState()
        tp = str(msg.partition)
        if state.applied.get(tp, -1) >= msg.offset:
            return  # applied before a crash: the state already holds it
        info = await self.lookups.version_info(ev.model, spec, {p.version for p in ev.predictions})
        watcher = mon.watchers.setdefault(ev.model, Watcher(ev.model))
        result = watcher.apply(state, list(ev.predictions), spec, info)
        await self.dispatch.publish(list(result.drift))
        sp = zlib.crc32(key) % P
        for sig in result.signals:
            await self.signals.send(
                key=key, value=orjson.dumps({**sig, "model": ev.model}), partition=sp
            )
        state.applied[tp] = msg.offset
        self.watch_table[key] = state.to_bytes()
        mon.watch_mem[ev.model] = state

    # -- labels: repartition by record id -----------------------------------------------------

    async def labels(self, event: Any) -> None:
        P = self.mon.settings.partitions
        ev = decoded(event, LabelsReceived, self.mon.names)
        errors = label_errors(await self.lookups.contract_of(ev.dataset), ev.labels)
        if errors:
            raise Unprocessable(
                f"labels break the contract of dataset '{ev.dataset}': " + " | ".join(errors[:5])
            )
        LABELS.labels(ev.dataset).inc(len(ev.labels))
        parts: dict[int, list[list[Any]]] = {}
        for lab in ev.labels:
            if lab.record_id is None:
                continue
            observed = (lab.observed_at or ev.occurred_at).timestamp()
            parts.setdefault(join_partition(ev.dataset, lab.record_id, P), []).append(
                [ev.dataset, lab.record_id, lab.label, observed]
            )
        for part, items in parts.items():
            await self.join.send(key=None, value=orjson.dumps({"l": items}), partition=part)

    # -- the join -----------------------------------------------------------------------------

    def _join_state(self, part: int) -> JoinPartition:
        """This partition's join index, rebuilt from the stored messages when not in memory."""
        jp = self.mon.joins.get(part)
        if jp is not None:
            return jp
        jp = JoinPartition(part)
        stored = []
        for key, raw in self.join_table.items():
            p, offset = parse_stored_key(key)
            if p == part:
                stored.append((offset, raw))
        for offset, raw in sorted(stored):
            body = orjson.loads(raw)
            jp.apply(body)
            jp.stored[offset] = body["t"]
        if stored:
            log.info("join state rebuilt", extra={"partition": part, "messages": len(stored)})
        self.mon.joins[part] = jp
        return jp

    async def join_message(self, event: Any) -> None:
        body = loaded(event, "join message", is_join)
        msg = event.message
        part = msg.partition
        jp = self._join_state(part)
        if "sweep" in body:
            for offset in jp.expire(self.mon.settings.join_ttl_s):
                del self.join_table[stored_key(part, offset)]
                JOIN_EXPIRED.inc()
            JOIN_BACKLOG.labels(str(part)).set(jp.waiting())
            return
        key = stored_key(part, msg.offset)
        if msg.offset in jp.stored:
            # Stored before a crash: send again what it produced (dropped if already seen).
            raw = self.join_table.get(key)
            pairs = [tuple(x) for x in orjson.loads(raw)["j"]] if raw else []
        else:
            pairs = jp.apply(body)
            n_preds, n_labels = len(body.get("p", ())), len(body.get("l", ()))
            JOIN.labels("prediction", "received").inc(n_preds)
            JOIN.labels("label", "received").inc(n_labels)
            JOIN.labels("pair", "joined").inc(len(pairs))
        for model, items in group_by_model(pairs).items():
            mkey = model.encode()
            await self.signals.send(
                key=mkey,
                value=orjson.dumps(
                    {"kind": "joined", "model": model, "items": items, "src": [part, msg.offset]}
                ),
                partition=zlib.crc32(mkey) % self.mon.settings.partitions,
            )
        if msg.offset not in jp.stored:
            latest = jp.latest(body)
            jp.stored[msg.offset] = latest
            self.join_table[key] = orjson.dumps({**body, "j": pairs, "t": latest})

    # -- signals: live metrics, retrain episodes, verdicts ------------------------------------

    async def signal(self, event: Any) -> None:
        mon = self.mon
        sig = loaded(event, "signal", is_signal)
        model = sig["model"]
        spec = await self.lookups.spec_of(model)
        key = model.encode()
        state = mon.brain_mem.get(model)
        if state is None:
            raw = self.brain_table.get(key)
            state = BrainState.from_bytes(raw) if raw else BrainState()
        msg = event.message
        tp = str(msg.partition)
        if state.applied.get(tp, -1) >= msg.offset:
            return
        brain = Brain(
            model,
            hold_interval_s=mon.settings.verdict_hold_interval_s,
            correlation_of=lambda v: mon.correlations.get((model, v)),
        )
        decisions = brain.apply(state, sig, spec)
        await self.dispatch.publish(decisions)
        state.applied[tp] = msg.offset
        self.brain_table[key] = state.to_bytes()
        mon.brain_mem[model] = state

    # -- registry events: refresh the cache, calibrate new versions ----------------------------

    async def version(self, event: Any) -> None:
        cache = self.mon.cache
        ev = decoded(event, ModelVersionRegistered, self.mon.names)
        cache.on_event(ev)
        if ev.status == "rejected":
            return
        spec = await self.lookups.spec_of(ev.model)
        mv = await cache.version(ev.model, ev.version)
        ref = await cache.artifact(mv.reference_sha256) if mv.reference_sha256 else None
        # Start calibrating now, so the version is watched from its first prediction.
        self.mon.calibrations.ready(VersionRef(ev.model, ev.version, spec, ref))

    async def alias(self, event: Any) -> None:
        ev = decoded(event, ModelAliasChanged, self.mon.names)
        self.alias_changes.apply(ev)  # once per event_id: a redelivered move is counted, skipped
