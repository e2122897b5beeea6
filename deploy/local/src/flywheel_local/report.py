"""The run's report: one self-contained HTML file with PNG charts (embedded), plus run.json.

Charts: accuracy over time (realised from the client's true labels, and the monitor's realised
and estimated ROC AUC), the drift statistic, and the traffic share per version, each with the
loop's decisions marked on it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from flywheel_shared.events import (
    DriftDetected,
    ModelAliasChanged,
    RetrainRequested,
    TrainingCompleted,
)

from .live import describe
from .record import LoopLatency, Outcome, Quality, RunRecord, Served, ts


def marks(rec: RunRecord) -> list[tuple[float, str, str]]:
    """(time, label, colour) of the decisions worth a vertical line."""
    out: list[tuple[float, str, str]] = []
    if rec.onset is not None:
        out.append((rec.onset, "drift injected", "black"))
    first_drift = next(iter(rec.of(DriftDetected)), None)
    if first_drift is not None:
        out.append((ts(first_drift), "drift detected", "tab:red"))
    for e in rec.of(RetrainRequested):
        out.append((ts(e), "retrain requested", "tab:orange"))
    for e in rec.of(TrainingCompleted):
        out.append((ts(e), f"v{e.version} trained", "tab:cyan"))
    for e in rec.of(ModelAliasChanged):
        if e.version is not None:
            weight = f" {e.weight:.0%}" if e.weight is not None else ""
            out.append((ts(e), f"{e.alias} v{e.version}{weight}", "tab:purple"))
    return out


def _mark(ax: Axes, rec: RunRecord, t0: float, labels: bool) -> None:
    for at, label, colour in marks(rec):
        ax.axvline(at - t0, color=colour, lw=0.8, ls="--", alpha=0.7)
        if labels:
            ax.text(
                at - t0,
                1.01,
                label,
                rotation=90,
                fontsize=7,
                color=colour,
                transform=ax.get_xaxis_transform(),
                va="bottom",
                ha="center",
            )


def _rolling(
    served: Sequence[Served], t0: float, width: float = 10.0, step: float = 2.0
) -> tuple[list[float], list[float], list[float]]:
    """Client-side accuracy and ROC AUC over a sliding window of ``width`` seconds."""
    if not served:
        return [], [], []
    s = sorted(served, key=lambda x: x.at)
    xs, acc, auc = [], [], []
    t, end, lo = s[0].at + width, s[-1].at, 0
    hi = 0
    while t <= end + step:
        while hi < len(s) and s[hi].at < t:
            hi += 1
        while lo < hi and s[lo].at < t - width:
            lo += 1
        if hi - lo >= 50:
            q = Quality.of(s[lo:hi])
            xs.append(t - t0)
            acc.append(q.accuracy)
            auc.append(q.roc_auc)
        t += step
    return xs, acc, auc


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def chart_accuracy(rec: RunRecord, t0: float) -> str:
    fig, ax = plt.subplots(figsize=(10, 3.6))
    xs, acc, auc = _rolling(rec.served, t0)
    ax.plot(xs, auc, label="ROC AUC, realised (client's true labels, 10 s)", color="tab:blue")
    ax.plot(xs, acc, label="accuracy, realised (10 s)", color="tab:green", alpha=0.7)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for sample in rec.samples:
        for key, value in sample.metrics.items():
            version, route, metric, kind = key.split("/")
            if metric == "roc_auc" and route == "production":
                xs_, ys_ = series.setdefault(f"{version} {kind}", ([], []))
                xs_.append(sample.at - t0)
                ys_.append(value)
    for name, (x, y) in sorted(series.items()):
        ax.plot(
            x, y, ls=":" if "estimated" in name else "-.", lw=1.2, label=f"ROC AUC {name} (monitor)"
        )
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("metric")
    ax.grid(alpha=0.3)
    _mark(ax, rec, t0, labels=True)
    ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def chart_drift(rec: RunRecord, t0: float) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.8))
    versions = sorted({v for s in rec.samples for v in s.drift})
    for v in versions:
        pts = [(s.at - t0, s.drift[v]) for s in rec.samples if v in s.drift]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"v{v}: max over features")
    thresholds = [s.threshold for s in rec.samples if s.threshold is not None]
    if thresholds:
        ax.axhline(thresholds[-1], color="tab:red", lw=1, label="alarm threshold")
    ax.set_xlabel("seconds since start")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylabel("drift statistic (normalised, log)")
    ax.grid(alpha=0.3)
    _mark(ax, rec, t0, labels=False)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def chart_traffic(rec: RunRecord, t0: float, step: float = 2.0) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.6))
    if rec.served:
        versions = sorted({s.version for s in rec.served})
        start, end = min(s.at for s in rec.served), max(s.at for s in rec.served)
        n = max(1, math.ceil((end - start) / step))
        counts = {v: [0] * n for v in versions}
        for s in rec.served:
            counts[s.version][min(n - 1, int((s.at - start) / step))] += 1
        totals = [sum(counts[v][i] for v in versions) or 1 for i in range(n)]
        xs = [start - t0 + (i + 0.5) * step for i in range(n)]
        ax.stackplot(
            xs,
            *[[counts[v][i] / totals[i] for i in range(n)] for v in versions],
            labels=[f"v{v}" for v in versions],
            alpha=0.8,
        )
    ax.set_ylim(0, 1)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("share of answers")
    _mark(ax, rec, t0, labels=False)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def _q(q: Quality) -> str:
    return f"{q.roc_auc:.3f} / {q.accuracy:.3f} (n={q.n:,})"


def write(rec: RunRecord, latency: LoopLatency | None, out: Outcome, path: Path) -> Path:
    """Write ``path`` (HTML) and ``run.json`` beside it; returns ``path``."""
    t0 = rec.started
    rows = []
    for e in sorted(rec.events, key=ts):
        desc = describe(e)
        if desc is None or (getattr(e, "decision", None) == "hold"):
            continue
        rows.append(
            f"<tr><td>{ts(e) - t0:7.1f}</td><td>{html.escape(desc[0])}</td>"
            f"<td>{html.escape(desc[1])}</td><td><code>{str(e.correlation_id)[:8]}</code></td></tr>"
        )
    steps = ""
    if latency is not None:
        steps = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{'n/a' if v is None else f'{v:.1f} s'}</td></tr>"
            for name, v in latency.steps()
        )
    line = latency.line() if latency else "loop latency: n/a (no drift injected)"
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Flywheel run report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}
img{{max-width:100%}} .big{{font-size:20px;font-weight:600}}</style></head><body>
<h1>Flywheel — the closed loop, one run</h1>
<p class="big">{html.escape(line)}</p>
<p>Client requests: {out.requests:,}, failed: {out.failed_requests}.
Drift findings: {out.drift_findings}, retrain requests: {out.retrain_requests}.</p>
<table><tr><th>served records (true labels)</th><th>ROC AUC / accuracy</th></tr>
<tr><td>before the drift (v{_first_version(rec)})</td><td>{_q(out.before)}</td></tr>
<tr><td>after the drift, old version</td><td>{_q(out.during)}</td></tr>
<tr><td>after the new version took all traffic</td><td>{_q(out.after)}</td></tr></table>
<h2>Accuracy</h2><img src="data:image/png;base64,{chart_accuracy(rec, t0)}">
<h2>Drift statistic</h2><img src="data:image/png;base64,{chart_drift(rec, t0)}">
<h2>Traffic share per version</h2><img src="data:image/png;base64,{chart_traffic(rec, t0)}">
<h2>Loop latency, step by step</h2><table>{steps}</table>
<h2>Decisions</h2><table><tr><th>t (s)</th><th>actor</th><th>decision</th><th>correlation</th></tr>
{"".join(rows)}</table>
</body></html>"""
    path.write_text(doc)
    (path.parent / "run.json").write_text(json.dumps(summary(rec, latency, out), indent=2))
    return path


def _first_version(rec: RunRecord) -> str:
    prods = [e.version for e in rec.of(ModelAliasChanged) if e.alias == "production"]
    return str(prods[0]) if prods else "?"


def summary(rec: RunRecord, latency: LoopLatency | None, out: Outcome) -> dict[str, Any]:
    """The run's numbers as JSON."""

    def q(x: Quality) -> dict[str, Any]:
        return {"n": x.n, "accuracy": x.accuracy, "roc_auc": x.roc_auc}

    return {
        "model": rec.model,
        "loop_latency": latency.to_dict() if latency else None,
        "line": latency.line() if latency else None,
        "requests": out.requests,
        "failed_requests": out.failed_requests,
        "failures": rec.failures,
        "drift_findings": out.drift_findings,
        "retrain_requests": out.retrain_requests,
        "before": q(out.before),
        "during": q(out.during),
        "after": q(out.after),
        "events": [e.model_dump(mode="json") for e in sorted(rec.events, key=ts)],
    }
