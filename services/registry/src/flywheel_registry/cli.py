"""``flywheel models ...``: look at and steer the registry from a terminal."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console
from rich.table import Table

from flywheel_shared.aliases import ALIASES
from flywheel_shared.registry import (
    Approval,
    AuditEntry,
    ModelInfo,
    ModelVersion,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
)
from flywheel_shared.settings import DEFAULT_REGISTRY_URL
from flywheel_shared.spec import SpecError, load_spec

out = Console()
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
DEFAULT_URL = DEFAULT_REGISTRY_URL


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _call(ctx: click.Context, fn: Callable[[RegistryClient], Awaitable[T]]) -> T:
    """Run ``fn`` with a client; registry errors become one readable line and exit 1."""
    url, token = ctx.obj["url"], ctx.obj["token"]

    async def go() -> T:
        async with RegistryClient(url, token, actor=_actor()) as client:
            return await fn(client)

    try:
        return asyncio.run(go())
    except RegistryUnavailable as exc:
        if exc.status == 0:
            err.print(f"[red]cannot reach the registry at {url}[/] ({exc.detail})")
        else:
            err.print(f"[red]registry unavailable ({exc.status} {exc.code}):[/] {exc.detail}")
        sys.exit(1)
    except RegistryError as exc:
        err.print(f"[red]registry refused ({exc.status} {exc.code}):[/] {exc.detail}")
        sys.exit(1)


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _aliases(info: ModelInfo) -> str:
    parts = []
    for name in ALIASES:
        state = info.aliases.get(name)
        if state is not None:
            weight = f" ({state.weight:.0%})" if state.weight is not None else ""
            parts.append(f"{name}=v{state.version}{weight}")
    return ", ".join(parts) or "-"


def _metrics(metrics: dict[str, float], limit: int = 3) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:limit]) or "-"


@click.group("models")
@click.option(
    "--registry-url",
    "--url",
    "url",
    envvar="FLYWHEEL_REGISTRY_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Registry base URL (env FLYWHEEL_REGISTRY_URL).",
)
@click.pass_context
def models(ctx: click.Context, url: str) -> None:
    """Models in the registry: versions, aliases, rollbacks, specs."""
    ctx.obj = {"url": url, "token": os.environ.get("FLYWHEEL_REGISTRY_TOKEN") or None}


@models.command("list")
@click.pass_context
def list_models(ctx: click.Context) -> None:
    """Every model with its latest version and aliases."""
    infos: list[ModelInfo] = _call(ctx, lambda c: c.list_models())
    table = Table(title="models")
    for col in ("model", "latest", "aliases", "description"):
        table.add_column(col)
    for m in infos:
        latest = f"v{m.latest_version}" if m.latest_version else "-"
        table.add_row(m.name, latest, _aliases(m), m.description[:60])
    out.print(table)


@models.command("show")
@click.argument("model")
@click.pass_context
def show(ctx: click.Context, model: str) -> None:
    """A model: its dataset, aliases and the versions they point at."""
    info: ModelInfo = _call(ctx, lambda c: c.get_model(model))
    table = Table(title=f"model {info.name}", show_header=False)
    table.add_row("description", info.description or "-")
    if info.spec is not None:
        table.add_row("dataset", info.spec.dataset.name)
        table.add_row("features", ", ".join(info.spec.features))
        table.add_row("recipe", info.spec.recipe.entrypoint)
        steps = ", ".join(f"{s.weight:.0%}" for s in info.spec.rollout.canary_steps)
        table.add_row("rollout", f"first {info.spec.rollout.first_alias}; canary steps {steps}")
    table.add_row("spec sha256", info.spec_sha256[:16])
    table.add_row("latest version", f"v{info.latest_version}" if info.latest_version else "-")
    for name, state in sorted(info.aliases.items()):
        weight = f" weight {state.weight:.0%}" if state.weight is not None else ""
        table.add_row(name, f"v{state.version}{weight} since {_when(state.updated_at)}")
    out.print(table)


@models.command("versions")
@click.argument("model")
@click.pass_context
def versions(ctx: click.Context, model: str) -> None:
    """Every version of MODEL with its status, metrics and lineage."""

    async def fetch(c: RegistryClient) -> tuple[list[ModelVersion], ModelInfo]:
        return await c.list_versions(model), await c.get_model(model)

    rows, info = _call(ctx, fetch)
    where: dict[int, list[str]] = {}
    for name, state in info.aliases.items():
        where.setdefault(state.version, []).append(name)
    table = Table(title=f"{model} versions")
    for col in ("version", "status", "aliases", "metrics", "snapshot", "run", "created"):
        table.add_column(col)
    for v in rows:
        status = {"candidate": "[green]candidate[/]", "rejected": "[red]rejected[/]"}.get(
            v.status, v.status
        )
        table.add_row(
            f"v{v.version}",
            status,
            ", ".join(sorted(where.get(v.version, []))) or "-",
            _metrics(v.metrics),
            v.lineage.snapshot_id[:12],
            v.run_id[:20],
            _when(v.created_at),
        )
    out.print(table)


@models.command("promote")
@click.argument("model")
@click.argument("version", type=int)
@click.option(
    "--alias",
    type=click.Choice(ALIASES),
    default="production",
    show_default=True,
)
@click.option("--weight", type=click.FloatRange(0, 1), default=None, help="Canary traffic share.")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@click.pass_context
def promote(
    ctx: click.Context, model: str, version: int, alias: str, weight: float | None, reason: str
) -> None:
    """Point an alias (default: production) of MODEL at VERSION."""
    state = _call(
        ctx,
        lambda c: c.move_alias(
            model,
            alias,
            version,
            weight=weight,
            reason=reason or f"promoted by {_actor()}",
        ),
    )
    weight_note = f" at {state.weight:.0%}" if state.weight is not None else ""
    out.print(f"[green]{model}: {alias} → v{state.version}{weight_note}[/]")


@models.command("rollback")
@click.argument("model")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@click.pass_context
def rollback(ctx: click.Context, model: str, reason: str) -> None:
    """Move MODEL's production alias back to the version it served before."""
    state = _call(ctx, lambda c: c.rollback(model, reason=reason or f"rollback by {_actor()}"))
    out.print(f"[yellow]{model}: production → v{state.version}[/]")


@models.command("approve")
@click.argument("model")
@click.argument("version", type=int)
@click.option("--reason", default="", help="Why (kept in the audit log).")
@click.pass_context
def approve(ctx: click.Context, model: str, version: int, reason: str) -> None:
    """Approve the rollout step VERSION of MODEL awaits (needs a token with the approver
    role; the spec's rollout.require_approval holds the step)."""
    approval: Approval = _call(
        ctx, lambda c: c.approve(model, version, reason=reason or f"approved by {_actor()}")
    )
    state = _call(ctx, lambda c: c.get_model(model)).aliases.get(approval.alias)
    weight = f" at {state.weight:.0%}" if state is not None and state.weight is not None else ""
    out.print(f"[green]{model}: {approval.alias} → v{approval.version}{weight} (approved)[/]")


@models.command("approvals")
@click.option("--model", default=None, help="Only this model's approvals.")
@click.option(
    "--state",
    type=click.Choice(["pending", "approved", "stale", "all"]),
    default="pending",
    show_default=True,
)
@click.pass_context
def approvals(ctx: click.Context, model: str | None, state: str) -> None:
    """Rollout steps held for approval (and, with --state, decided ones)."""
    rows: list[Approval] = _call(ctx, lambda c: c.approvals(model=model, state=state))
    table = Table(title=f"approvals ({state})")
    for col in ("requested", "model", "version", "into", "state", "by", "reason"):
        table.add_column(col, no_wrap=col in ("into", "state"))
    for a in rows:
        table.add_row(
            _when(a.requested_at),
            a.model,
            f"v{a.version}",
            a.alias,
            a.state,
            a.decided_by or "-",
            a.decision_reason or a.reason,
        )
    out.print(table)


@models.command("history")
@click.argument("model")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def history(ctx: click.Context, model: str, limit: int) -> None:
    """MODEL's alias audit log, newest first."""
    entries: list[AuditEntry] = _call(ctx, lambda c: c.history(model))
    table = Table(title=f"{model} alias history")
    for col in ("when", "alias", "from", "to", "weight", "actor", "reason"):
        table.add_column(col)
    for e in entries[:limit]:
        weight = f"{e.weight:.0%}" if e.weight is not None else ""
        table.add_row(
            _when(e.at), e.alias, _v(e.from_version), _v(e.to_version), weight, e.actor, e.reason
        )
    out.print(table)


def _v(x: int | None) -> str:
    return f"v{x}" if x is not None else "-"


@models.command("audit")
@click.option("--model", default=None, help="Only this model's writes.")
@click.option("--token", default=None, help="Only the writes of the token with this name.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.pass_context
def audit(ctx: click.Context, model: str | None, token: str | None, limit: int) -> None:
    """Audited writes (alias changes, registrations, status changes), newest first, each
    with the actor and the name of the token that made it."""
    entries: list[AuditEntry] = _call(ctx, lambda c: c.audit(model=model, token=token, limit=limit))
    table = Table(title="audit log")
    for col in ("when", "model", "action", "alias", "to", "actor", "token", "reason"):
        table.add_column(col, no_wrap=col in ("action", "token"))
    for e in entries:
        table.add_row(
            _when(e.at),
            e.model,
            e.action,
            e.alias or "-",
            _v(e.to_version),
            e.actor,
            e.token or "-",
            e.reason,
        )
    out.print(table)


@models.command("card")
@click.argument("model")
@click.argument("version", type=int)
@click.option("--json", "as_json", is_flag=True, help="The card as JSON instead of Markdown.")
@click.pass_context
def card(ctx: click.Context, model: str, version: int, as_json: bool) -> None:
    """VERSION of MODEL's model card: lineage, gates, alias history, approvals, live
    metrics, drift episodes and personal fields (Markdown)."""
    if as_json:
        found = _call(ctx, lambda c: c.card(model, version))
        click.echo(found.model_dump_json(indent=2, by_alias=True))
    else:
        click.echo(_call(ctx, lambda c: c.card(model, version, markdown=True)), nl=False)


@models.command("apply-spec")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def apply_spec(ctx: click.Context, file: Path) -> None:
    """Create or update a model from its spec FILE (YAML), validated locally first."""
    try:
        load_spec(file)
    except SpecError as exc:
        err.print(f"[red]{file}: {exc}[/]")
        sys.exit(1)
    text = file.read_text()
    info: ModelInfo = _call(ctx, lambda c: c.put_spec(text))
    out.print(f"[green]{info.name}: spec applied[/] (sha256 {info.spec_sha256[:16]})")


@click.command("registry-service")
def serve_command() -> None:
    """Run the registry service (settings from FLYWHEEL_REGISTRY_*, FLYWHEEL_KAFKA_*)."""
    from .app import main

    main()
