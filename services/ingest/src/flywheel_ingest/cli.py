"""``flywheel ingest FILE`` (upload a CSV/Parquet/JSONL file) and ``flywheel ingest-service``."""

from __future__ import annotations

import http.client
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

err = Console(stderr=True)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def read_batches(path: Path, batch_size: int) -> tuple[int | None, Iterator[list[dict[str, Any]]]]:
    """(row count if known, iterator of record batches) for a CSV, Parquet or JSONL file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):

        def lines() -> Iterator[list[dict[str, Any]]]:
            batch: list[dict[str, Any]] = []
            with path.open("rb") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        batch.append(orjson.loads(line))
                    except orjson.JSONDecodeError as exc:
                        raise click.ClickException(f"{path}:{n}: not valid JSON ({exc})") from exc
                    if len(batch) == batch_size:
                        yield batch
                        batch = []
            if batch:
                yield batch

        return None, lines()
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if suffix == ".parquet":
        pf = pq.ParquetFile(path)
        total = pf.metadata.num_rows
        batches = pf.iter_batches(batch_size=batch_size)
    elif suffix in (".csv", ".tsv"):
        table = pcsv.read_csv(
            path, parse_options=pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        )
        total = table.num_rows
        batches = iter(table.to_batches(max_chunksize=batch_size))
    else:
        raise click.ClickException(
            f"{path.name}: unsupported file type; use .csv, .parquet or .jsonl"
        )

    def rows() -> Iterator[list[dict[str, Any]]]:
        for b in batches:
            yield [{k: _clean(v) for k, v in r.items()} for r in b.to_pylist()]

    return total, rows()


class _Client:
    """A keep-alive HTTP client for ingest's API."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.headers = {"content-type": "application/json", "x-flywheel-source": "flywheel-cli"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        # One Idempotency-Key per batch, the same on every retry: a batch answered 503 (or cut
        # off mid-request) may have landed anyway, and ingest stores a key's records once.
        headers = {**self.headers, "idempotency-key": str(uuid.uuid4())}
        for attempt in range(30):
            try:
                self.conn.request(
                    "POST",
                    self.prefix + path,
                    body,
                    headers,
                )
                resp = self.conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.conn.close()
                if attempt == 29:
                    raise click.ClickException(
                        f"cannot reach ingest at {self.host}:{self.port}: {exc}"
                    ) from exc
                time.sleep(1)
                continue
            if resp.status == 503 and attempt < 29:
                time.sleep(1)
                continue
            try:
                return resp.status, orjson.loads(data)
            except orjson.JSONDecodeError:
                return resp.status, {"detail": data.decode(errors="replace")[:300]}
        raise AssertionError("unreachable")


@click.command("ingest")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dataset", "-d", required=True, help="Dataset name (its contract must exist).")
@click.option(
    "--ingest-url",
    "--url",
    "url",
    default="http://127.0.0.1:8000",
    show_default=True,
    envvar="FLYWHEEL_INGEST_URL",
    help="Ingest's HTTP API (env FLYWHEEL_INGEST_URL).",
)
@click.option(
    "--token",
    envvar="FLYWHEEL_INGEST_TOKEN",
    default=None,
    help="Bearer token, if ingest requires one (env FLYWHEEL_INGEST_TOKEN).",
)
@click.option("--batch-size", type=int, default=500, show_default=True, help="Records per request.")
@click.option(
    "--show-errors", type=int, default=5, show_default=True, help="Rejected records to print."
)
def ingest_command(
    file: Path, dataset: str, url: str, token: str | None, batch_size: int, show_errors: int
) -> None:
    """Upload FILE (CSV, Parquet or JSONL) into DATASET through the ingest API."""
    total, batches = read_batches(file, batch_size)
    client = _Client(url, token)
    accepted = rejected = 0
    reasons: Counter[str] = Counter()
    examples: list[str] = []
    started = time.perf_counter()
    sent = 0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
    ) as progress:
        task = progress.add_task(f"ingest {file.name} → {dataset}", total=total, rate="")
        for batch in batches:
            status, body = client.post(f"/v1/datasets/{dataset}/records", orjson.dumps(batch))
            if status not in (202, 422):
                raise click.ClickException(f"ingest answered {status}: {body.get('detail', body)}")
            accepted += body["accepted"]
            rejected += body["rejected"]
            for r in body["rejections"]:
                first = r["errors"][0]
                reasons[first["reason"].split(":")[0]] += 1
                if len(examples) < show_errors:
                    fields = "; ".join(f"{e['field']}: {e['reason']}" for e in r["errors"])
                    examples.append(f"row {sent + r['index'] + 1}: {fields}")
            sent += len(batch)
            rate = sent / max(1e-9, time.perf_counter() - started)
            progress.update(task, advance=len(batch), rate=f"{rate:,.0f} rec/s")
    elapsed = time.perf_counter() - started
    table = Table(title=f"{file.name} → {dataset}", show_header=False)
    table.add_row("records read", f"{sent:,}")
    table.add_row("accepted", f"[green]{accepted:,}[/]")
    table.add_row("rejected", f"[red]{rejected:,}[/]" if rejected else "0")
    for reason, n in reasons.most_common():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("time", f"{elapsed:.1f} s ({sent / max(elapsed, 1e-9):,.0f} rec/s)")
    err.print(table)
    for line in examples:
        err.print(f"  [red]✗[/] {line}")
    if sent and not accepted:
        sys.exit(1)


@click.command("ingest-service")
def serve_command() -> None:
    """Run the ingest service (settings from FLYWHEEL_INGEST_* and FLYWHEEL_KAFKA_*)."""
    from .app import main

    main()
