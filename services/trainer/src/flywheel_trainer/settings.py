"""Trainer settings (environment prefix ``FLYWHEEL_TRAINER_``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from flywheel_shared.settings import DEFAULT_REGISTRY_URL, ServiceSettings


class TrainerSettings(ServiceSettings):
    """Everything the trainer reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_TRAINER_", extra="ignore")

    port: int = Field(8200, description="HTTP port (health, readiness, metrics)")
    registry_url: str = Field(DEFAULT_REGISTRY_URL, description="the registry's base URL")
    registry_token: str | None = Field(None, description="bearer token for registry writes")
    spec_refresh_s: float = Field(30.0, gt=0, description="how often model specs are re-read")
    staleness_check_s: float = Field(60.0, gt=0, description="how often max_staleness is checked")
    retry_s: float = Field(
        5.0, gt=0, description="pause before retrying a run the registry refused"
    )

    executor: Literal["local", "kubernetes"] = Field(
        "local", description="where a run's process runs: a local subprocess or a Kubernetes Job"
    )
    k8s_api_url: str | None = Field(None, description="API server URL (default: in the cluster)")
    k8s_token: SecretStr | None = Field(None, description="bearer token (default: service account)")
    k8s_token_file: str | None = Field(None, description="file holding the bearer token")
    k8s_ca_file: str | None = Field(None, description="CA bundle of the API server")
    k8s_verify: bool = Field(True, description="verify the API server's certificate")
    k8s_namespace: str | None = Field(None, description="namespace of the Jobs (default: own)")
    k8s_image: str | None = Field(None, description="image of the training pods")
    k8s_image_pull_policy: str = Field("IfNotPresent", description="imagePullPolicy of the pods")
    k8s_service_account: str | None = Field(None, description="service account of the pods")
    k8s_resources: dict[str, Any] = Field(default_factory=dict, description="pod resources (JSON)")
    k8s_node_selector: dict[str, str] = Field(default_factory=dict, description="JSON")
    k8s_tolerations: list[dict[str, Any]] = Field(default_factory=list, description="JSON")
    k8s_env: dict[str, str] = Field(default_factory=dict, description="extra pod env (JSON)")
    k8s_env_from_secrets: list[str] = Field(
        default_factory=list, description="secrets whose keys become pod env (registry token, S3)"
    )
    k8s_image_pull_secrets: list[str] = Field(
        default_factory=list, description="imagePullSecrets of the pods (names, JSON)"
    )
    k8s_run_as_user: int = Field(10001, ge=1, description="runAsUser/fsGroup of the pods")
    k8s_poll_s: float = Field(2.0, gt=0, description="how often a Job's status is read")
    k8s_start_grace_s: float = Field(300.0, ge=0, description="time to schedule a pod, on top")
    k8s_ttl_s: int = Field(3600, ge=0, description="ttlSecondsAfterFinished of finished Jobs")
