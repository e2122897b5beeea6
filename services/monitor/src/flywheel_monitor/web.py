"""The monitor's HTTP pages (served by faust's web server): health, metrics, status, OpenAPI."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .openapi import document as openapi_document
from .runtime import Monitor


def add_pages(mon: Monitor) -> None:
    """Register the pages on the monitor's faust app."""
    app, settings, cache = mon.app, mon.settings, mon.cache

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: Any, request: Any) -> Any:
        problems = {}
        if not mon.started:
            problems["kafka"] = "starting (joining the group, recovering tables)"
        elif app.rebalancing:
            problems["kafka"] = "rebalancing"
        registry = cache.alive()
        if registry:
            problems["registry"] = registry
        if problems:
            return self.json({"status": "unready", "checks": problems}, status=503)
        return self.json({"status": "ready"})

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/v1/status")
    async def status(self: Any, request: Any) -> Any:
        models = {}
        for model, st in mon.watch_mem.items():
            models[model] = {
                "production": st.production,
                "versions": {
                    v: {
                        "pending_rows": len(vw.pending),
                        "calibrated": vw.detector_state is not None,
                        "last_alert_at": vw.alert_at,
                    }
                    for v, vw in st.versions.items()
                },
                "rollouts": {
                    a: {
                        "version": arm.version,
                        "step": arm.step,
                        "requests": arm.candidate.requests,
                    }
                    for a, arm in st.arms.items()
                },
            }
        assignment = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
        return self.json(
            {
                "worker": settings.worker_name,
                "assignment": assignment,
                "models": models,
                "recent_decisions": list(mon.recent),
            }
        )

    api_document = openapi_document()

    @app.page("/openapi.json")
    async def openapi(self: Any, request: Any) -> Any:
        return self.json(api_document)
