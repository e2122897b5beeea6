"""Serving benchmark: Flywheel serving (BentoML) against a plain FastAPI app, same model file.

In one run it:

1. starts (or uses) a Kafka broker and a registry process, trains the fraud example's
   logistic regression (``flywheel_fraud.recipes``) on ``FraudSimulator`` records, registers
   it and points ``production`` at it;
2. starts Flywheel serving (``python -m flywheel_serving``, ``--workers`` processes, prediction
   logging to Kafka on) and the plain FastAPI app ``bench/serving_fastapi_app.py`` (uvicorn,
   the same number of workers, the same skops file);
3. drives both with ``wrk`` (Debian package; one thread, keep-alive connections) at each
   concurrency, single-record ``POST /v1/models/fraud/predict`` requests, servers alternating
   per level so both see the same machine; reports RPS, p50, p99 and Flywheel/FastAPI ratios.

It measures, it does not judge: nothing here fails on a low number.

    uv run python bench/serving.py [--workers 2] [--concurrency 1,32,128] [--duration 10]
                                   [--rounds 1] [--bootstrap HOST:PORT] [--json out.json]

Progress goes to stderr, the result table (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "serving" / "tests"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from serving_support import Registry, fraud_spec, register, trained  # noqa: E402

from flywheel_shared.devkafka import pick_free_port  # noqa: E402
from flywheel_shared.testing.kafka import acquire_broker  # noqa: E402
from flywheel_shared.testing.procs import ServiceProcess  # noqa: E402


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNIT[m.group(2)]


def run_wrk(url: str, body_file: Path, concurrency: int, duration: float) -> dict[str, Any]:
    """One wrk run; RPS, p50/p99 in ms, non-2xx and socket errors."""
    script = body_file.with_suffix(".lua")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+(?:us|ms|s|m))", out, re.M))
    if found is None or set(lat) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    rps = float(found.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:(.*)$", out, re.M)
    return {
        "rps": rps,
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def write_wrk_script(body: bytes, path: Path) -> None:
    path.with_suffix(".lua").write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )


async def prepare(registry: Registry, data: bytes) -> None:
    async with registry.client() as reg:
        await reg.put_spec(fraud_spec())
        await register(reg, "fraud", data, alias="production")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", default="1,32,128")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    levels = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-serving-"))
    procs: list[ServiceProcess] = []
    broker = None
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            broker = acquire_broker()
            bootstrap = broker.bootstrap
        registry = Registry(bootstrap, tmp)
        procs.append(registry.proc)
        registry.proc.start()
        model_path = tmp / "fraud.skops"
        model_path.write_bytes(trained(1.0))
        asyncio.run(prepare(registry, model_path.read_bytes()))
        say("model registered; starting Flywheel serving and plain FastAPI")

        flywheel = registry.serving(tmp, workers=args.workers)
        procs.append(flywheel)
        flywheel.start(ready_timeout=180)
        spec = fraud_spec()
        # Two baselines: uvicorn as is, and with one BLAS/OpenMP thread per worker process,
        # as Flywheel serving sets for its workers.
        one_thread = {
            v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        }
        baselines = {"fastapi": {}, "fastapi-1t": one_thread}
        servers: dict[str, ServiceProcess] = {}
        for name, extra in baselines.items():
            port = pick_free_port()
            proc = ServiceProcess("uvicorn", {}, port, tmp / f"{name}.log")
            procs.append(proc)
            servers[name] = proc
            log = proc.log_path.open("ab")
            proc.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.serving_fastapi_app:app",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=ROOT,
                env={
                    **os.environ,
                    **extra,
                    "BENCH_MODEL_PATH": str(model_path),
                    "BENCH_FEATURES": ",".join(spec.features),
                },
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 120
        import urllib.request

        from serving_support import records

        body = json.dumps({"records": [records(1)[0]]}).encode()
        body_file = tmp / "body.json"
        write_wrk_script(body, body_file)
        url_s = flywheel.url + "/v1/models/fraud/predict"
        urls = {
            "flywheel": url_s,
            **{n: p.url + "/v1/models/fraud/predict" for n, p in servers.items()},
        }
        for name, url in urls.items():
            while True:
                try:
                    req = urllib.request.Request(
                        url, data=body, headers={"content-type": "application/json"}
                    )
                    urllib.request.urlopen(req, timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} did not start") from None
                    time.sleep(0.2)
        say("all up; warming up")
        for url in urls.values():
            run_wrk(url, body_file, 32, args.warmup)

        results: dict[str, dict[int, list[dict[str, Any]]]] = {n: {} for n in urls}
        for r in range(args.rounds):
            for c in levels:
                for name, url in urls.items():
                    res = run_wrk(url, body_file, c, args.duration)
                    results[name].setdefault(c, []).append(res)
                    say(f"round {r + 1} c={c} {name}: {res}")
        with urllib.request.urlopen(flywheel.url + "/metrics") as resp:
            metrics = resp.read().decode()
        batch = _batch_mean(metrics)
        print(table(results, levels, args, batch))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {
                        "results": results,
                        "workers": args.workers,
                        "duration": args.duration,
                        "machine": platform.platform(),
                        "cpus": os.cpu_count(),
                        "mean_batch_size": batch,
                    },
                    indent=2,
                )
            )
    finally:
        for p in reversed(procs):
            p.stop()
        if broker is not None:
            broker.close()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"kept {tmp}")


def _batch_mean(metrics: str) -> float | None:
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("flywheel_serving_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("flywheel_serving_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total / count if count else None


LABELS = {
    "flywheel": "Flywheel (BentoML, logging on)",
    "fastapi": "FastAPI + uvicorn",
    "fastapi-1t": "FastAPI + uvicorn, 1 BLAS thread/worker",
}


def table(
    results: dict[str, dict[int, list[dict[str, Any]]]],
    levels: list[int],
    args: argparse.Namespace,
    batch: float | None,
) -> str:
    def med(name: str, c: int, key: str) -> float:
        return statistics.median(r[key] for r in results[name][c])

    lines = [
        f"Single-record requests, {args.workers} worker processes each, wrk -t1, "
        f"{args.duration:g} s per cell, median of {args.rounds} round(s).",
        "",
        "| concurrency | server | RPS | p50 ms | p99 ms | non-2xx |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in levels:
        for name, label in LABELS.items():
            lines.append(
                f"| {c} | {label} | {med(name, c, 'rps'):,.0f} | {med(name, c, 'p50_ms'):.1f} "
                f"| {med(name, c, 'p99_ms'):.1f} | {sum(r['non_2xx'] for r in results[name][c])} |"
            )
    lines += [
        "",
        "| concurrency | baseline | RPS ratio (Flywheel / baseline) | p99 ratio |",
        "| ---: | --- | ---: | ---: |",
    ]
    for c in levels:
        for base in ("fastapi", "fastapi-1t"):
            rps = med("flywheel", c, "rps") / med(base, c, "rps")
            p99 = med("flywheel", c, "p99_ms") / med(base, c, "p99_ms")
            lines.append(f"| {c} | {LABELS[base]} | {rps:.2f}x | {p99:.2f}x |")
    if batch is not None:
        lines += ["", f"Mean model batch size in Flywheel over the run: {batch:.1f} records."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
