"""Property-based fuzzing of the HTTP APIs, driven by each service's own OpenAPI document
(schemathesis on hypothesis): valid and invalid requests against the real processes, with and
without the registry token. No request may get a 5xx: bad input is a 4xx with a reason.

The totals (requests per service and mode, 5xx seen) are printed for the README; a 5xx fails
the test with the request that caused it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from e2e_support import Stack, fraud_spec
from hypothesis import HealthCheck
from schemathesis import GenerationMode

from flywheel_shared.registry import RegistryClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = 25  # per operation and generation mode
# Routes whose work is not input handling: probes and metrics answer whatever is sent.
SKIP_PATHS = {"/metrics"}


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    without_invalid_form: int = 0  # (operation, negative mode) pairs with nothing to negate


def run_cases(
    service: str,
    base_url: str,
    op: schemathesis.APIOperation,
    mode: GenerationMode,
    session: requests.Session,
    tally: Tally,
    headers: dict[str, str],
) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES,
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
        if resp.status_code >= 500:
            tally.server_errors.append(
                f"{service}: {case.method} {case.formatted_path} ({mode.value}) -> "
                f"{resp.status_code} {resp.text[:300]!r}; body {case.body!r:.300}"
            )

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # An operation without parameters or body has no invalid form to send.
        assert mode is GenerationMode.NEGATIVE, (service, op.label)
        tally.without_invalid_form += 1


def fuzz(service: str, base_url: str, tally: Tally, headers: dict[str, str]) -> int:
    """Every operation of the service's OpenAPI document, positive and negative cases."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    session = requests.Session()
    for op in operations:
        if op.path in SKIP_PATHS:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_cases(service, base_url, op, mode, session, tally, headers)
    return len(operations)


async def test_no_http_request_gets_a_5xx(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path)
    try:
        await asyncio.to_thread(stack.registry.start)
        spec, _ = fraud_spec(min_new_rows=10_000_000)  # no training starts while we fuzz
        async with RegistryClient(stack.registry_url, stack.token) as reg:
            await reg.put_spec(spec)
        await asyncio.gather(
            asyncio.to_thread(stack.ingest.start), asyncio.to_thread(stack.trainer.start)
        )
        tally = Tally()
        auth = {"Authorization": f"Bearer {stack.token}"}
        ops: dict[str, Any] = {}
        for service, proc, headers in (
            ("registry", stack.registry, auth),
            ("registry (no token)", stack.registry, {}),
            ("ingest", stack.ingest, {}),
            ("trainer", stack.trainer, {}),
        ):
            ops[service] = await asyncio.to_thread(fuzz, service, proc.url, tally, headers)
        for proc in (stack.registry, stack.ingest, stack.trainer):
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
                    }
                )
            )
        assert total >= 500
        assert not tally.server_errors, "\n".join(tally.server_errors[:20])
    finally:
        stack.stop()
