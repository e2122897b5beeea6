"""``flywheel data stats DATASET``: the current snapshot's statistics beside the baseline's."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click
import httpx
import orjson
from rich.console import Console
from rich.table import Table

from flywheel_shared.registry import RegistryClient, RegistryError
from flywheel_shared.snapshots import production_snapshot

out = Console()


@click.group("data")
def data_group() -> None:
    """Datasets: snapshot statistics, quarantined batches, releases."""


async def _production(url: str, token: str | None, dataset: str) -> tuple[str, str] | None:
    async with RegistryClient(url, token, actor="flywheel-cli") as reg:
        models = [
            m if m.spec else m.model_copy(update={"spec": await reg.get_spec(m.name)})
            for m in await reg.list_models()
        ]
        found = await production_snapshot(dataset, models, reg.get_version)
    return None if found is None else (found[2], f"{found[0]} v{found[1]}")


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def _lines(s: dict[str, Any] | None) -> dict[str, str]:
    """One field's statistics as (label → text)."""
    if s is None:
        return {}
    total = s["count"] + s["nulls"]
    lines = {"rows": f"{total:,}", "null rate": _rate(s["nulls"], total)}
    if "counts" in s:
        top = list(s["counts"].items())[:3]
        shown = " · ".join(f"{k} {_rate(n, s['count'])}" for k, n in top)
        lines["top"] = shown or "-"
    else:
        for k in ("min", "max", "mean", "std"):
            lines[k] = _num(s.get(k))
    return lines


def stats_table(body: dict[str, Any]) -> Table:
    """The answer of ``GET /v1/datasets/{name}/stats`` as a table: current vs baseline."""
    cur, base = body["current"], body.get("baseline")
    title = f"{body['dataset']}: current snapshot vs baseline"
    if body.get("baseline_source"):
        title += f" ({body['baseline_source']})"
    table = Table(title=title)
    for col in ("field", "", "current", "baseline"):
        table.add_column(col)

    def snap(s: dict[str, Any] | None, key: str) -> str:
        if s is None:
            return "-"
        if key == "id":
            return str(s["id"])[:12]
        if key == "excluded":
            return f"{s['excluded_segments']} segments, {s['excluded_rows']:,} rows"
        return f"{s[key]:,}"

    for key in ("id", "rows", "segments", "excluded"):
        table.add_row("snapshot" if key == "id" else "", key, snap(cur, key), snap(base, key))
    names = list(cur["stats"]) + [n for n in (base or {}).get("stats", {}) if n not in cur["stats"]]
    for name in names:
        now = _lines(cur["stats"].get(name))
        then = _lines((base or {}).get("stats", {}).get(name))
        labels = list(now) + [k for k in then if k not in now]
        for i, label in enumerate(labels):
            table.add_row(
                name if i == 0 else "",
                label,
                now.get(label, "-"),
                then.get(label, "-"),
                end_section=i == len(labels) - 1,
            )
    return table


@data_group.command("stats")
@click.argument("dataset")
@click.option(
    "--baseline", default=None, help="Snapshot id to compare with (default: production's)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@click.option(
    "--ingest-url",
    default="http://127.0.0.1:8000",
    show_default=True,
    envvar="FLYWHEEL_INGEST_URL",
    help="Ingest's HTTP API (env FLYWHEEL_INGEST_URL).",
)
@click.option(
    "--registry-url",
    default=None,
    envvar="FLYWHEEL_REGISTRY_URL",
    help="Find the production model's snapshot here (env FLYWHEEL_REGISTRY_URL); "
    "else ingest finds it, if it reads the registry.",
)
@click.option("--registry-token", default=None, envvar="FLYWHEEL_REGISTRY_TOKEN", hidden=True)
def stats_command(
    dataset: str,
    baseline: str | None,
    as_json: bool,
    ingest_url: str,
    registry_url: str | None,
    registry_token: str | None,
) -> None:
    """DATASET's current snapshot statistics beside the baseline (the production model's)."""
    source = "request" if baseline else None
    if baseline is None and registry_url:
        try:
            found = asyncio.run(_production(registry_url, registry_token, dataset))
        except RegistryError as exc:
            raise click.ClickException(f"registry: {exc}") from exc
        if found is not None:
            baseline, source = found
    params = {"baseline": baseline} if baseline else {}
    try:
        resp = httpx.get(
            f"{ingest_url.rstrip('/')}/v1/datasets/{dataset}/stats", params=params, timeout=60
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach ingest at {ingest_url}: {exc}") from exc
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text[:300]}
    if resp.status_code != 200:
        raise click.ClickException(
            f"ingest answered {resp.status_code}: {body.get('detail', body)}"
        )
    if source and body.get("baseline") is not None:
        body["baseline_source"] = source
    if as_json:
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    out.print(stats_table(body))
    if body.get("baseline_note"):
        out.print(f"no baseline: {body['baseline_note']}")


# -- quarantine ---------------------------------------------------------------------------

_INGEST_URL = click.option(
    "--ingest-url",
    default="http://127.0.0.1:8000",
    show_default=True,
    envvar="FLYWHEEL_INGEST_URL",
    help="Ingest's HTTP API (env FLYWHEEL_INGEST_URL).",
)
_TOKEN = click.option(
    "--token", default=None, envvar="FLYWHEEL_INGEST_TOKEN", help="Ingest's token (env)."
)
_ACTOR = click.option(
    "--actor",
    default=lambda: os.environ.get("FLYWHEEL_ACTOR") or os.environ.get("USER") or "unknown",
    help="Who you are, for the audit record (env FLYWHEEL_ACTOR, else $USER).",
)


def call(
    method: str, url: str, token: str | None, actor: str | None = None, body: Any = None
) -> Any:
    """One request to ingest; its JSON answer (a ClickException for anything but 2xx)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if actor:
        headers["x-flywheel-actor"] = actor
    try:
        resp = httpx.request(method, url, json=body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach ingest: {exc}") from exc
    try:
        answer = resp.json()
    except ValueError:
        answer = {"detail": resp.text[:300]}
    if resp.status_code >= 300:
        detail = answer.get("detail", answer) if isinstance(answer, dict) else answer
        raise click.ClickException(f"ingest answered {resp.status_code}: {detail}")
    return answer


def _findings(q: dict[str, Any]) -> str:
    return "\n".join(f["detail"] for f in q["findings"])


@data_group.command("quarantined")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answer.")
@_INGEST_URL
def quarantined_command(dataset: str, as_json: bool, ingest_url: str) -> None:
    """DATASET's segments that failed their batch checks (held, or released and by whom)."""
    body = call("GET", f"{ingest_url.rstrip('/')}/v1/datasets/{dataset}/quarantined", None)
    if as_json:
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    if not body["segments"]:
        out.print(f"{dataset}: no quarantined segments")
        return
    table = Table(title=f"{dataset}: quarantined segments")
    table.add_column("segment", no_wrap=True)
    for col in ("rows", "quarantined at", "status", "why"):
        table.add_column(col)
    for s in body["segments"]:
        q = s["quarantine"]
        status = "held" if s["held"] else f"released by {q['released_by']}: {q['release_reason']}"
        table.add_row(s["segment_id"], f"{s['rows']:,}", q["at"][:19], status, _findings(q))
    out.print(table)


@data_group.command("release")
@click.argument("dataset")
@click.argument("segment")
@click.option("--reason", required=True, help="Why the batch may train models (audited).")
@_INGEST_URL
@_TOKEN
@_ACTOR
def release_command(
    dataset: str, segment: str, reason: str, ingest_url: str, token: str | None, actor: str
) -> None:
    """Release quarantined SEGMENT of DATASET into training (announced as new data)."""
    url = f"{ingest_url.rstrip('/')}/v1/datasets/{dataset}/segments/{segment}/release"
    body = call("POST", url, token, actor, {"reason": reason})
    q = body["quarantine"]
    out.print(
        f"released {dataset}/{segment} ({body['rows']:,} rows) as {q['released_by']}: "
        "the next training snapshot includes it"
    )


@data_group.command("erase")
@click.argument("dataset")
@click.option("--id", "ids", multiple=True, required=True, help="A record id (repeatable).")
@click.option("--reason", required=True, help="Why, e.g. the request's reference (audited).")
@_INGEST_URL
@_TOKEN
@_ACTOR
def erase_command(
    dataset: str, ids: tuple[str, ...], reason: str, ingest_url: str, token: str | None, actor: str
) -> None:
    """Erase records of DATASET by id: absent from every future snapshot; versions trained
    on a snapshot that held them can no longer be reproduced."""
    url = f"{ingest_url.rstrip('/')}/v1/datasets/{dataset}/erase"
    body = call("POST", url, token, actor, {"ids": list(ids), "reason": reason})
    out.print(
        f"erased {body['rows']} row(s) of {len(ids)} id(s) from {dataset}: "
        f"{len(body['segments'])} segment(s) rewritten, "
        f"{len(body['snapshots'])} snapshot record(s) marked as containing erased data"
    )
