"""Property-based fuzzing of the HTTP APIs, driven by each service's own OpenAPI document
(schemathesis on hypothesis): valid and invalid requests against the real processes (registry,
ingest, trainer, monitor, and serving with a production model), with and without the tokens.

Every answer is checked against the document: no 5xx (bad input is a 4xx with a reason), every
status is one the operation declares, with the declared media type, body schema and headers.
The totals (requests per service and mode, statuses, failures) are printed for the README; a
failure fails the test with the request that caused it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pandas as pd
import pytest
import requests
import schemathesis
from e2e_support import Stack, fraud_spec
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_fraud import recipes
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.modelio import dump_model
from flywheel_shared.registry import Lineage, RegistryClient, VersionCreate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = 25  # per operation and generation mode
GUARD_EXAMPLES = 10  # without the token: the guarded operations only, to see the guard answer
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SERVING_TOKEN = "serving-token"


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """Ingest's NDJSON bodies: one JSON value per line (the document describes the lines)."""
    lines = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(v).encode() + b"\n" for v in lines)


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # check → failed answers
    examples: list[str] = field(default_factory=list)  # the first failures, in full
    without_invalid_form: int = 0  # (operation, negative mode) pairs with nothing to negate
    seconds: dict[str, float] = field(default_factory=dict)  # per service


def run_cases(
    service: str,
    base_url: str,
    op: schemathesis.APIOperation,
    mode: GenerationMode,
    session: requests.Session,
    tally: Tally,
    headers: dict[str, str],
    examples: int,
) -> None:
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        resp = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        tally.requests[f"{service} {mode.value}"] += 1
        tally.statuses[resp.status_code] += 1
        where = f"{service}: {case.method} {case.formatted_path} ({mode.value})"
        if resp.status_code >= 500:
            tally.server_errors.append(
                f"{where} -> {resp.status_code} {resp.text[:300]!r}; body {case.body!r:.300}"
            )
        try:
            case.validate_response(resp, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                tally.failures[type(failure).__name__] += 1
            if len(tally.examples) < 20:
                tally.examples.append(f"{where} -> {resp.status_code}:\n{group}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # An operation without parameters or body has no invalid form to send.
        assert mode is GenerationMode.NEGATIVE, (service, op.label)
        tally.without_invalid_form += 1


def fuzz(
    service: str, base_url: str, tally: Tally, headers: dict[str, str], *, guarded: bool = False
) -> int:
    """Every operation of the service's OpenAPI document, positive and negative cases (with
    ``guarded``: only those behind the bearer token, fewer cases)."""
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    if guarded:
        operations = [op for op in operations if op.definition.raw.get("security")]
    session = requests.Session()
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            examples = GUARD_EXAMPLES if guarded else EXAMPLES
            run_cases(service, base_url, op, mode, session, tally, headers, examples)
    tally.seconds[service] = round(time.monotonic() - started, 1)
    return len(operations)


async def register_production_model(stack: Stack, spec_features: list[str]) -> int:
    """A trained fraud model registered and made production (what serving will load)."""
    frame = pd.DataFrame(FraudSimulator(seed=3, fraud_rate=0.05).batch(2000))
    params = {"label": "is_fraud", "features": spec_features, "seed": 42}
    data = await asyncio.to_thread(lambda: dump_model(recipes.logistic_regression(frame, params)))
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        art = await reg.upload_artifact(data)
        body = VersionCreate(
            run_id=uuid.uuid4().hex,
            status="candidate",
            artifact_sha256=art.sha256,
            lineage=Lineage(
                dataset="transactions",
                snapshot_id="0" * 64,
                snapshot_rows=len(frame),
                code_version="test",
                recipe="flywheel_fraud.recipes:logistic_regression",
                recipe_sha256=hashlib.sha256(b"recipe").hexdigest(),
                params=params,
                seed=42,
            ),
            training_seconds=1.0,
            correlation_id=str(uuid.uuid4()),
        )
        version = (await reg.register_version("fraud", body)).version
        await reg.move_alias("fraud", "production", version)
    return version


def wait_for_production(serving: ServiceProcess, timeout: float = 60) -> None:
    """Until serving has loaded the production version (registered while it started)."""
    deadline = time.monotonic() + timeout
    while serving.request("GET", "/v2/models/fraud/ready")[0] != 200:
        assert time.monotonic() < deadline, serving.tail()
        time.sleep(0.2)


async def test_every_http_answer_is_one_the_openapi_document_declares(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    stack = Stack(kafka_bootstrap, tmp_path)
    serving = stack.process(
        "serving",
        {
            "FLYWHEEL_SERVING_TOKEN": SERVING_TOKEN,
            "FLYWHEEL_SERVING_RESYNC_S": "2",  # the alias may move before it follows events
        },
        label="serving",
    )
    monitor = stack.process("monitor", label="monitor")
    slow: asyncio.Future[Any] | None = None
    try:
        await asyncio.to_thread(stack.registry.start)
        spec, _ = fraud_spec(min_new_rows=10_000_000)  # no training starts while we fuzz
        async with RegistryClient(stack.registry_url, stack.token) as reg:
            await reg.put_spec(spec)
        # Serving and the monitor start (the slowest) while the model trains and the other
        # services are fuzzed; serving loads production when the alias moves.
        slow = asyncio.gather(
            asyncio.to_thread(serving.start, 180), asyncio.to_thread(monitor.start, 120)
        )
        await asyncio.gather(
            register_production_model(stack, list(spec.features)),
            asyncio.to_thread(stack.ingest.start, 120),
            asyncio.to_thread(stack.trainer.start, 120),
        )
        tally = Tally()
        auth = {"Authorization": f"Bearer {stack.token}"}
        serving_auth = {"Authorization": f"Bearer {SERVING_TOKEN}"}
        ops: dict[str, Any] = {}

        async def run(*services: tuple[str, ServiceProcess, dict[str, str], bool]) -> None:
            for service, proc, headers, guarded in services:
                ops[service] = await asyncio.to_thread(
                    fuzz, service, proc.url, tally, headers, guarded=guarded
                )

        # The registry's fuzzing writes models, never one named 'fraud'.
        await run(
            ("registry", stack.registry, auth, False),
            ("registry (no token)", stack.registry, {}, True),
            ("ingest", stack.ingest, {}, False),
            ("trainer", stack.trainer, {}, False),
        )
        await slow
        await asyncio.to_thread(wait_for_production, serving)
        assert serving.request("GET", "/docs.json")[0] == 200  # BentoML's own document stays
        tally.seconds["until serving answers"] = round(time.monotonic() - started, 1)
        await run(
            ("serving", serving, serving_auth, False),
            ("serving (no token)", serving, {}, True),
            ("monitor", monitor, {}, False),
        )
        for proc in (stack.registry, stack.ingest, stack.trainer, serving, monitor):
            assert proc.proc is not None and proc.proc.poll() is None, proc.tail()
            assert proc.ready(), proc.tail()  # still up and ready after the fuzzing
        total = sum(tally.requests.values())
        with capsys.disabled():
            print(
                "\nHTTP fuzzing: "
                + json.dumps(
                    {
                        "operations": ops,
                        "requests": dict(tally.requests),
                        "total": total,
                        "status_codes": {str(k): v for k, v in sorted(tally.statuses.items())},
                        "operations_without_invalid_form": tally.without_invalid_form,
                        "5xx": len(tally.server_errors),
                        "conformance_failures": dict(tally.failures),
                        "seconds": {**tally.seconds, "total": round(time.monotonic() - started)},
                    }
                )
            )
        assert total >= 1000
        assert not tally.server_errors, "\n".join(tally.server_errors[:20])
        assert not tally.failures, "\n\n".join(tally.examples)
    finally:
        serving.stop()
        monitor.stop()
        if slow is not None:  # their start-up waits end once they are stopped
            await asyncio.gather(slow, return_exceptions=True)
        stack.stop()
