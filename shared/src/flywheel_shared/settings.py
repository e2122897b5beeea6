"""Settings shared by every service (pydantic-settings, read from the environment).

Each service has its own class with ``env_prefix="FLYWHEEL_<SVC>_"`` and nests these, so the
Kafka address is one variable for all of them: ``FLYWHEEL_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach Kafka. Environment prefix ``FLYWHEEL_KAFKA_``."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_KAFKA_", extra="ignore")

    bootstrap: str = Field("127.0.0.1:9092", description="comma-separated host:port list")
    topic_prefix: str = Field("flywheel", description="topics are named {prefix}.{name}.v{N}")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: str | None = Field(None, description="e.g. SCRAM-SHA-512 (with SASL_*)")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: str | None = Field(
        None, repr=False, description="SASL password (never shown: not in repr or logs)"
    )
    sasl_password_file: str | None = Field(
        None,
        description="file holding the SASL password (wins over sasl_password); read at start "
        "and again at every (re)connection, so a rotated secret needs no restart",
    )
    ssl_cafile: str | None = Field(None, description="CA bundle of the brokers (SSL, SASL_SSL)")
    ssl_certfile: str | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: str | None = Field(None, description="client certificate's key (mutual TLS)")
    replication_factor: int = Field(1, ge=1, description="for topics created at start-up")
    topic_retention_ms: dict[str, int] = Field(
        default_factory=dict,
        description='retention.ms per logical topic (e.g. {"data.raw": 86400000}; -1: for '
        "ever) for topics created at start-up, over the defaults of flywheel_shared.topics",
    )
    linger_ms: int = Field(5, ge=0, description="producer batching delay")
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "zstd",
        description="producer compression (zstd: aiokafka runs lz4 at level 9, ~7x the CPU)",
    )
    max_request_bytes: int = Field(16 * 1024 * 1024, description="largest message produced")
    session_timeout_ms: int = Field(10_000, description="consumer group session timeout")

    @model_validator(mode="after")
    def _known_topics(self) -> Self:
        from .topics import TOPICS  # topics imports the events: not at module level

        for name, ms in self.topic_retention_ms.items():
            if name not in TOPICS:
                raise ValueError(
                    f"topic_retention_ms: no topic '{name}' (one of {', '.join(sorted(TOPICS))})"
                )
            if ms < -1:
                raise ValueError(f"topic_retention_ms['{name}']: {ms} (milliseconds, or -1)")
        return self

    @model_validator(mode="after")
    def _read_password_file(self) -> Self:
        # Read once here so that a missing file fails the start, and so that callers reading
        # sasl_password (the monitor's faust credentials) see the file's secret.
        if self.sasl_password_file:
            self.sasl_password = self._password_from_file()
        return self

    def _password_from_file(self) -> str | None:
        assert self.sasl_password_file
        try:
            return Path(self.sasl_password_file).read_text().strip() or None
        except OSError as exc:
            raise ValueError(
                f"cannot read the SASL password file {self.sasl_password_file}: {exc.strerror}"
            ) from None

    def sasl_secret(self) -> str | None:
        """The SASL password now: the file's content (re-read) if set, else sasl_password."""
        if self.sasl_password_file:
            try:
                return self._password_from_file()
            except ValueError:
                pass  # gone since the start (a secret being swapped): keep the one read then
        return self.sasl_password

    def client_kwargs(self) -> dict[str, object]:
        """Connection keyword arguments common to aiokafka producers, consumers and admin."""
        kw: dict[str, object] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kw["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism or self.security_protocol.startswith("SASL_"):
            kw.update(
                # PLAIN is Kafka's (and aiokafka's) default mechanism.
                sasl_mechanism=self.sasl_mechanism or "PLAIN",
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_secret(),
            )
        return kw

    def ssl_context(self) -> ssl.SSLContext:
        """TLS to the brokers: verify them against ``ssl_cafile`` (else the system CAs), and
        present ``ssl_certfile``/``ssl_keyfile`` when set (aiokafka needs a context for SSL)."""
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        return context


class StorageSettings(BaseSettings):
    """Where datasets and artifacts live. Environment prefix ``FLYWHEEL_STORAGE_``."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_STORAGE_", extra="ignore")

    uri: str = Field(
        ".flywheel/store", description="root URI: a local path, file://, or s3://bucket/prefix"
    )


#: Where the services find the registry unless ``FLYWHEEL_REGISTRY_URL`` says otherwise.
DEFAULT_REGISTRY_URL = "http://127.0.0.1:8100"


class ServiceSettings(BaseSettings):
    """Fields every service has; subclass with its own ``env_prefix``."""

    model_config = SettingsConfigDict(extra="ignore")

    environment: Literal["dev", "production"] = Field(
        "dev", description="production refuses unsafe settings"
    )
    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8000, description="HTTP port")
    log_level: str = Field("INFO", description="logging level")
    log_json: bool = Field(True, description="structured JSON logs (false: plain text)")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
