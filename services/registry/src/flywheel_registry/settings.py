"""Registry settings (environment prefix ``FLYWHEEL_REGISTRY_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from flywheel_shared.auth import TokenTable, UnsafeSettings, read_secret, require_token
from flywheel_shared.settings import ServiceSettings

__all__ = ["RegistrySettings", "UnsafeSettings"]


class RegistrySettings(ServiceSettings):
    """Everything the registry reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_REGISTRY_", extra="ignore")

    port: int = Field(8100, description="HTTP port")
    database_url: str = Field(
        "sqlite:///.flywheel/registry.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user:pw@host/db",
    )
    token: SecretStr | None = Field(
        None, description="bearer token required on every write (and reads with read_auth)"
    )
    token_file: str | None = Field(None, description="file holding the token (wins over token)")
    tokens_file: str | None = Field(
        None,
        description="YAML/JSON file of named tokens with roles (reader, operator, approver, "
        "service), each by its sha256 or a token_file; the single token above is 'default' "
        "with every role",
    )
    read_auth: bool = Field(False, description="require the token on reads too")
    relay_enabled: bool = Field(
        True,
        description="publish the outbox to Kafka (off: events wait in the database, e.g. on "
        "read replicas or during a Kafka incident)",
    )
    relay_poll_s: float = Field(1.0, gt=0, description="outbox poll interval when idle")
    fault_crash_after_publish: bool = Field(
        False, description="TESTS ONLY: exit right after Kafka acknowledged an outbox batch"
    )
    relay_batch: int = Field(100, ge=1, description="outbox rows published per round trip")
    consume_verdicts: bool = Field(True, description="apply rollout.verdict events")
    consume_facts: bool = Field(
        True,
        description="keep drift.detected, rollout.verdict and retrain.requested for the model "
        "cards (consumer group '<consumer_group>-facts')",
    )
    consumer_group: str = Field(
        "flywheel-registry", description="Kafka consumer group of the rollout.verdict consumer"
    )
    max_artifact_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="largest artifact accepted by POST /v1/artifacts"
    )
    db_pool_size: int = Field(5, ge=1, description="database connection pool size")

    def check(self) -> None:
        """Refuse settings that are unsafe for ``environment``."""
        if self.environment == "production" and self.fault_crash_after_publish:
            raise UnsafeSettings("refusing to start: fault injection is for tests, not production")
        require_token(
            None if self.token_table().open else "set",
            environment=self.environment,
            variable="FLYWHEEL_REGISTRY_TOKEN",
            what="writes",
            tokens_variable="FLYWHEEL_REGISTRY_TOKENS_FILE",
        )

    def token_value(self) -> str | None:
        """The bearer token (from ``token_file`` or ``token``), or None when auth is off."""
        return read_secret(self.token, self.token_file)

    def token_table(self) -> TokenTable:
        """Every token the registry accepts and its roles (open when there is none)."""
        return TokenTable.for_service(self.token_value(), self.tokens_file)
