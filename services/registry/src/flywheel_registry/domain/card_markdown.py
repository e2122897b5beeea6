"""A model card as Markdown: one section per part of the version's story."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flywheel_shared.cards import ModelCard

SECTIONS = (
    "Summary",
    "Data",
    "Training",
    "Evaluation & gates",
    "Rollout & alias history",
    "Approvals",
    "Live metrics",
    "Drift episodes",
    "Personal data",
)
LIVE_ROWS = 20
"""The newest verdicts shown in the Markdown (the JSON card has them all)."""


def render_markdown(card: ModelCard) -> str:
    """The card as a Markdown document (deterministic for the same card)."""
    parts = [
        f"# Model card: {card.model} v{card.version}",
        f"_Generated {_when(card.generated_at)} by the Flywheel registry._",
        _summary(card),
        _data(card),
        _training(card),
        _evaluation(card),
        _rollout(card),
        _approvals(card),
        _live(card),
        _drift(card),
        _personal(card),
    ]
    return "\n\n".join(parts) + "\n"


def _summary(card: ModelCard) -> str:
    status = card.status + (f" ({card.status_reason})" if card.status_reason else "")
    serving = ", ".join(f"{a} ({w:.0%})" if w is not None else a for a, w in card.aliases.items())
    pending = [a for a in card.approvals if a.state == "pending"]
    if card.require_approval is None:
        approval = "not required (fully automatic rollout)"
    else:
        approval = f"required to enter {card.require_approval}"
    for a in pending:
        approval += f"; **awaiting approval** into {a.alias} since {_when(a.requested_at)}"
    about = f" — {_cell(card.description)}" if card.description else ""
    lines = [
        f"- **Model**: {card.model}{about}",
        f"- **Version**: {card.version}, status {status}",
        f"- **Registered**: {_when(card.created_at)} (run `{card.run_id}`, "
        f"correlation `{card.correlation_id}`)",
        f"- **Parent version**: {_v(card.parent_version) if card.parent_version else 'none'}",
        f"- **Artifact**: `{card.artifact_sha256}` ({card.artifact_format})",
        f"- **Serving now**: {serving or 'no alias'}",
        f"- **Approval**: {approval}",
    ]
    if card.retired is not None:
        r = card.retired
        lines.append(f"- **Retired**: {_when(r.at)}, {r.cause}")
    return "## Summary\n\n" + "\n".join(lines)


def _data(card: ModelCard) -> str:
    lin, snap = card.lineage, card.snapshot
    lines = [
        f"- **Dataset**: {lin.dataset}",
        f"- **Snapshot**: `{lin.snapshot_id}` ({lin.snapshot_rows} rows)",
        f"- **Excluded**: {lin.excluded_segments} segments, {lin.excluded_rows} rows",
        f"- **Window**: {_json(lin.window)}",
        f"- **Holdout**: {_json(lin.holdout)}",
    ]
    if not snap.found:
        lines.append(f"- **Snapshot record**: {snap.note or 'snapshot record not found'}")
        return "## Data\n\n" + "\n".join(lines)
    lines.append(
        f"- **Snapshot record**: {snap.rows} rows in {snap.segments} segments, "
        f"{snap.excluded_segments} segments ({snap.excluded_rows} rows) left out, "
        f"built {_when(snap.created_at) if snap.created_at else '?'}"
    )
    rows = []
    for name, s in snap.stats.items():
        if s.get("kind") == "categorical":
            counts = sorted(s.get("counts", {}).items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{k}: {n}" for k, n in counts[:5])
            more = f" (+{len(counts) - 5} more)" if len(counts) > 5 else ""
            rows.append([name, "categorical", s.get("count"), s.get("nulls"), shown + more])
        else:
            rng = f"min {_num(s.get('min'))}, max {_num(s.get('max'))}"
            spread = f"mean {_num(s.get('mean'))}, std {_num(s.get('std'))}"
            rows.append([name, "numeric", s.get("count"), s.get("nulls"), f"{rng}, {spread}"])
    table = _table(["field", "kind", "count", "nulls", "distribution"], rows)
    return "## Data\n\n" + "\n".join(lines) + "\n\n" + table


def _training(card: ModelCard) -> str:
    lin = card.lineage
    lines = [
        f"- **Recipe**: `{lin.recipe}`",
        f"- **Recipe source sha256**: `{lin.recipe_sha256}`",
        f"- **Code version**: {lin.code_version}",
        f"- **Environment lock sha256**: `{lin.lock_sha256}`" if lin.lock_sha256 else "",
        f"- **Params**: `{_json(lin.params)}`",
        f"- **Seed**: {lin.seed}",
        f"- **Training time**: {card.training_seconds:.1f} s",
    ]
    return "## Training\n\n" + "\n".join(line for line in lines if line)


def _evaluation(card: ModelCard) -> str:
    verdict = "passed" if card.passed_gate else "**rejected**"
    lines = [
        f"- **Gate**: {verdict}",
        f"- **Gates**: {', '.join(f'`{g}`' for g in card.gates) or 'none declared'}",
        f"- **Primary metric**: {card.primary_metric}",
    ]
    lines += [f"- Gate reason: {_cell(r)}" for r in card.gate_reasons]
    champion = card.champion_metrics or {}
    names = list(card.metrics) + [m for m in champion if m not in card.metrics]
    rows = []
    for m in names:
        mine, theirs = card.metrics.get(m), champion.get(m)
        delta = f"{mine - theirs:+.4g}" if mine is not None and theirs is not None else ""
        rows.append([m, _num(mine), _num(theirs), delta])
    note = "" if card.champion_metrics is not None else "\n\n_No champion to compare with._"
    table = _table(["metric (holdout)", "this version", "champion", "delta"], rows)
    return "## Evaluation & gates\n\n" + "\n".join(lines) + "\n\n" + table + note


def _rollout(card: ModelCard) -> str:
    rows = [
        [
            _when(e.at),
            e.action,
            e.alias or "-",
            f"{_v(e.from_version)} → {_v(e.to_version)}",
            f"{e.weight:.0%}" if e.weight is not None else "",
            e.actor,
            e.token or "-",
            e.reason,
        ]
        for e in card.alias_history
    ]
    header = ["at", "action", "alias", "from → to", "weight", "actor", "token", "reason"]
    return "## Rollout & alias history\n\n" + (_table(header, rows) if rows else "_None._")


def _approvals(card: ModelCard) -> str:
    rows = [
        [
            _when(a.requested_at),
            a.alias,
            a.state,
            a.source,
            a.reason,
            a.decided_by or "-",
            _when(a.decided_at) if a.decided_at else "-",
            a.decision_reason,
        ]
        for a in card.approvals
    ]
    header = ["requested", "alias", "state", "source", "why", "decided by", "decided", "note"]
    return "## Approvals\n\n" + (_table(header, rows) if rows else "_None._")


def _live(card: ModelCard) -> str:
    shown = card.live_metrics[-LIVE_ROWS:]
    rows = [
        [
            _when(m.at),
            m.alias,
            m.decision,
            ", ".join(f"{k}={_num(v)}" for k, v in sorted(m.evidence.items())) or "-",
            "; ".join(m.reasons),
        ]
        for m in shown
    ]
    header = ["at", "alias", "verdict", "evidence (live metrics)", "reasons"]
    if not rows:
        return "## Live metrics\n\n_No rollout verdicts._"
    earlier = len(card.live_metrics) - len(shown)
    note = f"_{earlier} earlier verdicts are in the JSON card._\n\n" if earlier else ""
    return "## Live metrics\n\n" + note + _table(header, rows)


def _drift(card: ModelCard) -> str:
    rows = [
        [
            _when(d.at),
            d.detector,
            ", ".join(d.features),
            ", ".join(f"{k}={_num(p)}" for k, p in sorted(d.p_values.items())) or "-",
            _num(d.threshold),
            "" if d.window is None else str(d.window),
        ]
        for d in card.drift_episodes
    ]
    header = ["at", "detector", "features", "p-values", "threshold", "window"]
    body = _table(header, rows) if rows else "_No drift detected._"
    asks = [
        f"- Retrain requested {_when(r.at)} by {r.requested_by or '?'}: {_cell(r.reason)}"
        for r in card.retrain_requests
    ]
    if card.retired is not None:
        asks.append(f"- Left production {_when(card.retired.at)}: {card.retired.cause}")
    return "## Drift episodes\n\n" + body + ("\n\n" + "\n".join(asks) if asks else "")


def _personal(card: ModelCard) -> str:
    if not card.personal_fields:
        return "## Personal data\n\nThe dataset contract marks no field personal."
    names = ", ".join(f"`{f}`" for f in card.personal_fields)
    return (
        "## Personal data\n\n"
        f"Personal fields (contract `personal: true`): {names}. Their values are hashed or "
        "dropped in the prediction log, withheld in rejections and dead letters, and left "
        "out of drift detection; their category values are withheld in this card."
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _v(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if value else "-"


def _when(value: datetime) -> str:
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.strftime("%Y-%m-%d %H:%M:%S UTC")
