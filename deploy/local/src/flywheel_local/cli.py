"""``flywheel up`` (``make up``): the closed loop on this machine, start to finish."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from pathlib import Path
from uuid import UUID

import click
from rich.console import Console

from flywheel_shared.events import TrainingStarted
from flywheel_shared.ops import trace

from . import report
from .live import View
from .record import RunRecord, loop_latency, outcome
from .scenario import LoopFailed, Observer, Scenario, bring_up, demo_spec, run
from .stack import LocalStack, broker

ROOT = Path(__file__).resolve().parents[4]
DEFAULTS = Scenario()


async def show_trace(console: Console, stack: LocalStack, cid: UUID) -> None:
    """The loop's audit trail, read back from Kafka (what ``flywheel trace`` prints)."""
    try:
        trail = await trace.collect(stack.kafka, correlation_id=cid, timeout=20)
    except Exception as exc:  # the run's result stands without its trail
        console.print(f"[yellow]could not read the audit trail back: {exc}[/]")
        return
    console.rule(f"[bold]audit trail of the loop: flywheel trace {cid}")
    held = [s for s in trail.steps if getattr(s.event, "decision", None) == "hold"]
    trail.steps = [s for s in trail.steps if getattr(s.event, "decision", None) != "hold"]
    trace.render(console, trail)
    if held:
        console.print(f"({len(held)} verdicts 'hold' left out here; flywheel trace lists them)")


@click.command("up", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--seed",
    type=int,
    default=DEFAULTS.seed,
    show_default=True,
    help="Simulator seed: another seed, other transactions.",
)
@click.option(
    "--rate",
    type=float,
    default=DEFAULTS.rate,
    show_default=True,
    help="Transactions per second (each is scored, then ingested with its label).",
)
@click.option(
    "--scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Length of the warm-up and recovery phases: 0.5 faster, 3 longer.",
)
@click.option(
    "--drift",
    type=click.Choice(["both", "covariate", "concept"]),
    default=DEFAULTS.drift,
    show_default=True,
    help="What changes at the drift.",
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="Leave the stack up after the run and print commands to explore it.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=ROOT / ".flywheel",
    show_default=".flywheel",
    help="Broker data, and this run's state in demo/.",
)
@click.option(
    "--live/--no-live",
    default=None,
    help="Live dashboard (default: on a terminal) or one line per decision.",
)
def up(
    seed: int,
    rate: float,
    scale: float,
    drift: str,
    keep_running: bool,
    state_dir: Path,
    live: bool | None,
) -> None:
    """Run the closed-loop demo on this machine, with nobody pressing a button.

    Kafka, the registry, ingest, the trainer, serving and the monitor start as separate
    processes. The simulator streams card transactions: serving scores each one, ingest gets it
    with its label a little later (a chargeback). The first rows train v1, which goes live.
    Then the market and the fraud pattern change: the monitor detects the drift and asks for
    a retrain, the trainer trains v2 on fresh rows, the monitor's verdicts move v2 through
    shadow and canary to production, and accuracy recovers.

    At the end it prints the loop latency (drift onset → v2 serving all traffic), writes
    an HTML report with charts, and stops everything it started (also on Ctrl-C). Exit code 0
    when the loop closed with no failed client request, 1 otherwise.
    """
    sc = Scenario(seed=seed, rate=rate, drift=drift).scaled(scale)
    try:
        code = asyncio.run(main(sc, state_dir, keep_running, live))
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted: everything started here was stopped[/]")
        code = 130
    sys.exit(code)


async def main(sc: Scenario, state_dir: Path, keep_running: bool, live: bool | None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    run_dir = state_dir / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)  # a second run needs no cleaning by hand
    run_dir.mkdir(parents=True)
    console.rule("[bold]Flywheel — the closed loop on this machine")
    console.print("starting Kafka (first time: jars from Maven Central) …")
    kafka = broker(state_dir)
    stack = LocalStack(run_dir, kafka.bootstrap)
    spec = demo_spec(ROOT)
    rec = RunRecord(model=spec.name, started=time.time())
    view = View(rec, console, live=live)
    observer = Observer(stack, rec, view.event)
    code = 1
    try:
        view.say(f"kafka {kafka.bootstrap} ({kafka.kind}), topics {stack.prefix}.*")
        await bring_up(stack, spec, view.say)
        await observer.start()
        with view:
            try:
                await run(sc, stack, spec, rec, view.say)
            except LoopFailed as exc:
                view.say(f"[red]{exc}[/]")
        latency = loop_latency(rec)
        out = outcome(rec, latency)
        path = report.write(rec, latency, out, run_dir / "report.html")
        console.rule("[bold]result")
        if latency is not None:
            for name, value in latency.steps():
                console.print(f"  {name:48} {'n/a' if value is None else f'{value:6.1f} s'}")
        console.print(
            f"ROC AUC before the drift {out.before.roc_auc:.3f}, old version after it "
            f"{out.during.roc_auc:.3f}, new version {out.after.roc_auc:.3f}; "
            f"{out.retrain_requests} retrain request(s); "
            f"{out.requests:,} client requests, {out.failed_requests} failed"
        )
        print(latency.line() if latency else "loop latency: n/a")
        print(f"report: {path}")
        cid = next((e.correlation_id for e in reversed(rec.of(TrainingStarted))), None)
        if cid is not None:
            await show_trace(console, stack, cid)
        closed = latency is not None and latency.complete
        code = 0 if closed and out.failed_requests == 0 else 1
        if keep_running:
            env = stack.write_env_file(run_dir / "env.sh")
            console.rule("[bold]the stack stays up (Ctrl-C stops it)")
            console.print(
                f"source {env}\n"
                "uv run flywheel status\n"
                "uv run flywheel trace --model fraud --last\n"
                "uv run flywheel models list\n"
                "uv run flywheel models versions fraud\n"
                f"logs: {run_dir / 'logs'}/"
            )
            await asyncio.Event().wait()
        return code
    finally:
        await observer.stop()
        stack.stop()
        kafka.close()
