"""Why Kafka cannot be reached, in one readable line.

aiokafka reports every failed bootstrap as ``KafkaConnectionError: Unable to bootstrap from
[...]``, whatever the cause: a broker that is down, a wrong password, an untrusted certificate,
a plaintext client on a TLS port. :func:`connection_problem` opens one connection with the
same settings and turns what happened into a sentence that names the cause and what to check.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from ..ops.trace import describe_error
from ..settings import KafkaSettings

__all__ = ["KafkaUnavailable", "connection_problem", "explain"]


class KafkaUnavailable(ConnectionError):
    """Kafka cannot be used; the message says why (see :func:`connection_problem`)."""


def explain(exc: BaseException, settings: KafkaSettings, address: str) -> str:
    """One line for a failure to connect to the broker at ``address`` with ``settings``."""
    protocol = settings.security_protocol
    if isinstance(exc, SaslAuthenticationFailed):
        mechanism = settings.sasl_mechanism or "PLAIN"
        return (
            f"authentication failed: Kafka at {address} refused the {mechanism} credentials of "
            f"user {settings.sasl_username!r} (check FLYWHEEL_KAFKA_SASL_USERNAME and "
            "FLYWHEEL_KAFKA_SASL_PASSWORD or _PASSWORD_FILE)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError | IllegalSaslStateError):
        return (
            f"authentication failed: Kafka at {address} does not take SASL mechanism "
            f"{settings.sasl_mechanism or 'PLAIN'} ({describe_error(exc)})"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the certificate of Kafka at {address} is not trusted ({exc.verify_message}); "
            "point FLYWHEEL_KAFKA_SSL_CAFILE at the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with Kafka at {address} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach Kafka at {address}: connection refused"
    if isinstance(exc, TimeoutError):
        return f"cannot reach Kafka at {address}: no answer in time"
    if isinstance(exc, KafkaConnectionError) and "closed" in str(exc):
        return (
            f"Kafka at {address} closed the connection: does the listener expect another "
            f"security protocol than {protocol}? (FLYWHEEL_KAFKA_SECURITY_PROTOCOL)"
        )
    return f"cannot connect to Kafka at {address}: {describe_error(exc)}"


async def connection_problem(settings: KafkaSettings, timeout: float = 5.0) -> str | None:
    """None if a bootstrap server accepts a connection (TLS and SASL included), else why not
    (one line per server tried, joined by ``; ``)."""
    try:
        options = settings.client_kwargs()
    except Exception as exc:  # e.g. an unreadable CA file
        return f"Kafka client settings: {describe_error(exc)}"
    options.pop("bootstrap_servers", None)
    problems = []
    for address in (a.strip() for a in settings.bootstrap.split(",") if a.strip()):
        host, _, port = address.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id="flywheel-diagnosis",
                    request_timeout_ms=int(timeout * 1000),
                    **options,
                ),
                timeout,
            )
        except Exception as exc:
            problems.append(explain(exc, settings, address))
            continue
        conn.close()
        return None
    return "; ".join(problems) or "no bootstrap servers configured"
