"""Security of the local broker's client listener: SASL/SCRAM users and TLS."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .maven import KafkaStartError

SCRAM_MECHANISM = "SCRAM-SHA-512"
_BROKER_USER = "devkafka-broker"  # inter-broker SCRAM user; readiness probes log in as it
_SECURITY_DIR = "security"
_SECRETS_FILE = "secrets.json"
_SCRAM_NAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")
# kafka-storage splits --add-scram on commas; quotes, backslashes and blanks would need
# escaping in the JAAS config and in shells: refused rather than half supported.
_SCRAM_PASSWORD_BAD = re.compile(r'[\s,"\\]')
_TLS_DAYS = "3650"


class KafkaSecurity:
    """How the broker's client listener is secured; the default (nothing) is PLAINTEXT.

    ``scram_users`` (name → password): require SASL/SCRAM-SHA-512 and create these users. They
    are created when the data directory's storage is formatted, i.e. on its first start, so a
    data directory keeps the users it was first started with (another set is an error).
    ``tls``: TLS with a certificate for 127.0.0.1 and localhost, signed by a throwaway CA; both
    are generated in ``<data_dir>/security/`` on first use and kept, and clients verify the
    broker with :attr:`LocalKafka.ca_file`. Both together: ``SASL_SSL``.
    """

    def __init__(self, scram_users: Mapping[str, str] | None = None, *, tls: bool = False) -> None:
        users = dict(scram_users or {})
        for name, password in users.items():
            if not _SCRAM_NAME.fullmatch(name):
                raise ValueError(f"SCRAM user name {name!r}: use 1-128 letters, digits and . _ @ -")
            if name == _BROKER_USER:
                raise ValueError(f"SCRAM user name {name!r} is the broker's own; pick another")
            if not password or _SCRAM_PASSWORD_BAD.search(password):
                raise ValueError(
                    f"the SCRAM password of {name!r} must be non-empty, without commas, "
                    "quotes, backslashes or whitespace"
                )
        self.scram_users: dict[str, str] = users
        self.tls = bool(tls)

    @property
    def protocol(self) -> str:
        """Kafka security protocol of the client listener: PLAINTEXT, SSL, SASL_PLAINTEXT or
        SASL_SSL."""
        if self.scram_users:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL" if self.tls else "PLAINTEXT"

    @property
    def sasl(self) -> bool:
        """True when clients must log in (SCRAM)."""
        return bool(self.scram_users)

    def digest(self, salt: str) -> str:
        """A salted hash of the users and passwords (to tell whether storage has them)."""
        items = json.dumps(sorted(self.scram_users.items()))
        return hashlib.sha256(f"{salt}|{items}".encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KafkaSecurity):
            return NotImplemented
        return (self.scram_users, self.tls) == (other.scram_users, other.tls)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:  # never the passwords
        return f"KafkaSecurity(scram_users={sorted(self.scram_users)}, tls={self.tls})"


def parse_scram_user(text: str) -> tuple[str, str]:
    """``USER:PASSWORD`` → ``(user, password)`` (the password may contain colons).

    Raises ``ValueError`` with a message that never repeats the password.
    """
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        which = f" for user {name!r}" if sep and name else ""
        raise ValueError(f"expected USER:PASSWORD{which}")
    KafkaSecurity({name: password})  # validates both
    return name, password


def _security_options(
    protocol: str, ca_file: Path | None, user: str | None, password: str | None
) -> dict[str, Any]:
    """aiokafka connection arguments for ``protocol`` (empty for PLAINTEXT)."""
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(ca_file) if ca_file else None
        )
    if protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=SCRAM_MECHANISM, sasl_plain_username=user, sasl_plain_password=password
        )
    return options


def _keytool(java: str) -> str:
    for candidate in (Path(java).parent, Path(os.path.realpath(java)).parent):
        if (candidate / "keytool").is_file():
            return str(candidate / "keytool")
    found = shutil.which("keytool")
    if found is None:
        raise KafkaStartError("`keytool` not found: TLS needs the JDK's keytool next to java")
    return found


def _run_tools(*commands: tuple[str, list[str]]) -> None:
    """Run ``(label, argv)`` commands in parallel (short-lived JVMs); raise if any fails.

    The error names the label, never the command line (it carries the keystore password).
    """
    procs = [
        (label, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for label, cmd in commands
    ]
    failures = []
    for label, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            text = out.decode(errors="replace").strip()
            failures.append(f"keytool {label} failed ({proc.returncode}): {text}")
    if failures:
        raise KafkaStartError("generating the TLS certificate failed:\n" + "\n".join(failures))
