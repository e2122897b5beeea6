"""Trainer settings (environment prefix ``FLYWHEEL_TRAINER_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel_shared.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Everything the trainer reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_TRAINER_", extra="ignore")

    port: int = Field(8200, description="HTTP port (health, readiness, metrics)")
    registry_url: str = Field("http://127.0.0.1:8100", description="the registry's base URL")
    registry_token: str | None = Field(None, description="bearer token for registry writes")
    spec_refresh_s: float = Field(30.0, gt=0, description="how often model specs are re-read")
    staleness_check_s: float = Field(60.0, gt=0, description="how often max_staleness is checked")
    retry_s: float = Field(
        5.0, gt=0, description="pause before retrying a run the registry refused"
    )
