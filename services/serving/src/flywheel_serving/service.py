"""The BentoML service: ``bentoml serve flywheel_serving.service:FlywheelServing``.

The package's ``__init__`` sets ``BENTOML_DO_NOT_TRACK`` and one BLAS thread per worker
before this module imports bentoml and numpy.

Each of the ``FLYWHEEL_SERVING_WORKERS`` worker processes builds its own
:class:`~flywheel_serving.runtime.ServingRuntime` in its start-up hook (models, alias
follower, prediction log) and answers through the transports in ``api.py``, mounted as a
plain ASGI app: the prediction path goes through BentoML's server, process management,
metrics and readiness, without per-request IO descriptors or pydantic models. With
``FLYWHEEL_SERVING_FAST_PATH`` (the default) the prediction routes also skip BentoML's
per-request middleware (``fastpath.py``).
"""

from __future__ import annotations

import bentoml
import pandas  # noqa: F401  (imported at start, not during the first model load)
import sklearn.pipeline  # noqa: F401
import skops.io  # noqa: F401

from flywheel_shared.auth import read_secret
from flywheel_shared.logging import setup_logging

from . import fastpath
from .api import create_app
from .runtime import ServingRuntime, spread_accepts, wait_ready
from .settings import ServingSettings

SETTINGS = ServingSettings()
if SETTINGS.fair_accept:
    spread_accepts()  # the workers share one socket: each takes one connection per turn
_current: list[ServingRuntime] = []
PREDICTION_ROUTES = [
    r"/v1/models/[^/]+/(versions/[^/]+/)?predict",
    r"/v2/models/[^/]+/(versions/[^/]+/)?infer",
]


def current_runtime() -> ServingRuntime | None:
    """This worker's runtime, once started."""
    return _current[0] if _current else None


app = create_app(
    current_runtime,
    max_body_bytes=SETTINGS.max_body_bytes,
    token=read_secret(SETTINGS.token, SETTINGS.token_file),
)


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="flywheel-serving",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
    logging={"access": {"enabled": False}},
    metrics={"enabled": True},
    # BentoML's OpenTelemetry middleware wraps every request; the prediction routes skip it
    # unless asked for (regular expressions searched in the URL).
    tracing={} if SETTINGS.trace_predictions else {"excluded_urls": PREDICTION_ROUTES},
    endpoints={"livez": "/healthz", "readyz": "/readyz"},
)
class FlywheelServing:
    """Serves the registry's live model versions; one instance per worker process."""

    def __init__(self) -> None:
        setup_logging("serving", SETTINGS.log_level, json=SETTINGS.log_json)
        self.runtime = ServingRuntime(SETTINGS)

    @bentoml.on_startup
    async def start_runtime(self) -> None:
        """Start loading models and connecting to Kafka; wait a while for the models.

        A worker takes no connection before this returns, so on a normal start every
        worker joins fully loaded; with the registry away it starts answering (not
        ready) after ``startup_wait_s`` and keeps retrying in the background. With the
        models loaded, the heap is collected once and frozen (``gc_freeze``).
        """
        await self.runtime.start()
        _current[:] = [self.runtime]
        await wait_ready(self.runtime, SETTINGS.startup_wait_s)
        self.runtime.settle_heap()

    @bentoml.on_shutdown
    async def stop_runtime(self) -> None:
        """Flush the prediction log and close the clients."""
        await self.runtime.stop()

    def __is_ready__(self) -> bool:
        """``/readyz``: the registry was read and the aliases' versions are loaded."""
        return self.runtime.ready()


if SETTINGS.fast_path and not SETTINGS.trace_predictions:
    fastpath.install(
        FlywheelServing, app.state.predictions, PREDICTION_ROUTES, SETTINGS.request_timeout_s
    )
