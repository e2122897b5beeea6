"""Serving settings (environment prefix ``FLYWHEEL_SERVING_``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from flywheel_shared.settings import DEFAULT_REGISTRY_URL, ServiceSettings


class ServingSettings(ServiceSettings):
    """Everything serving reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_SERVING_", extra="ignore")

    registry_url: str = Field(DEFAULT_REGISTRY_URL, description="the model registry")
    registry_token: str | None = Field(None, description="bearer token for the registry")
    token: SecretStr | None = Field(
        None, description="bearer token required on predictions and status (unset: open)"
    )
    token_file: str | None = Field(None, description="file holding the token (wins over token)")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="models to serve (comma-separated); empty: every model in the registry",
    )
    workers: int = Field(2, ge=1, description="HTTP worker processes (each holds every model)")
    max_batch_size: int = Field(
        128, ge=1, description="most records per model call (adaptive batching)"
    )
    inline_rows: int = Field(
        1,
        ge=0,
        description="model calls of at most this many records run on the event loop (no thread "
        "hand-off, no GIL convoy); larger ones on the model thread, while the loop gathers the "
        "next batch (0: all on the thread)",
    )
    gc_freeze: bool = Field(
        True,
        description="collect once when the models are loaded, then gc.freeze() the heap: full "
        "collections walk only newer objects (no 1 s pauses); later loads are frozen too",
    )
    fair_accept: bool = Field(
        True,
        description="each worker accepts one connection per event-loop turn, so new "
        "connections spread over the workers sharing the socket (asyncio takes up to 2048)",
    )
    trace_predictions: bool = Field(
        False,
        description="OpenTelemetry spans for the prediction routes (BentoML's tracing): off, they"
        " cost a third of the event loop under load and nothing exports them unless BentoML"
        " tracing is configured",
    )
    fast_path: bool = Field(
        True,
        description="POSTs to the prediction routes skip BentoML's per-request middleware "
        "(its HTTP metrics, tracing, context) and go straight to the transports, with the same "
        "timeout; off when trace_predictions is on",
    )
    shadow: bool = Field(True, description="mirror traffic to the shadow version, if any")
    max_shadow_pending: int = Field(
        512, ge=0, description="shadow records waiting at most; beyond, mirroring is skipped"
    )
    log_capacity: int = Field(
        20_000, ge=1, description="predictions buffered for Kafka; beyond, new ones are dropped"
    )
    log_batch: int = Field(500, ge=1, description="most predictions per PredictionsLogged event")
    log_flush_s: float = Field(0.2, gt=0, description="longest a prediction waits to be sent")
    startup_wait_s: float = Field(
        30.0, ge=0, description="a starting worker waits this long for its models to load"
    )
    resync_s: float = Field(
        30.0, gt=0, description="re-read aliases from the registry this often (safety net)"
    )
    retry_max_s: float = Field(10.0, gt=0, description="longest backoff between registry retries")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest accepted request body"
    )
    request_timeout_s: float = Field(30.0, gt=0, description="per-request timeout (504 past it)")

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value
