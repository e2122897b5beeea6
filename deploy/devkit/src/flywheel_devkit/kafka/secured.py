"""What a secured broker needs: its secrets, certificates, security properties and
the client options that reach it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .maven import KafkaStartError, _say
from .security import (
    _BROKER_USER,
    _SECRETS_FILE,
    _TLS_DAYS,
    SCRAM_MECHANISM,
    KafkaSecurity,
    _keytool,
    _run_tools,
    _security_options,
)
from .state import BrokerState


class SecuredBroker(BrokerState):
    """The security side of a broker: secrets, TLS material, client options."""

    def client_options(self, user: str | None = None) -> dict[str, Any]:
        """aiokafka client arguments to reach this broker as ``user`` (SCRAM).

        ``user`` defaults to the first of :attr:`security`'s users, else the broker's own.
        """
        name, password = self._credentials(user)
        return {
            "bootstrap_servers": self.bootstrap,
            **_security_options(self.security_protocol, self.ca_file, name, password),
        }

    def client_env(self, user: str | None = None) -> dict[str, str]:
        """The ``FLYWHEEL_KAFKA_*`` variables that point a Flywheel service at this broker as
        ``user`` (password included)."""
        protocol = self.security_protocol
        env = {"FLYWHEEL_KAFKA_BOOTSTRAP": self.bootstrap}
        if protocol == "PLAINTEXT":
            return env
        env["FLYWHEEL_KAFKA_SECURITY_PROTOCOL"] = protocol
        if protocol.startswith("SASL_"):
            name, password = self._credentials(user)
            env.update(
                FLYWHEEL_KAFKA_SASL_MECHANISM=SCRAM_MECHANISM,
                FLYWHEEL_KAFKA_SASL_USERNAME=name or "",
                FLYWHEEL_KAFKA_SASL_PASSWORD=password or "",
            )
        if self.ca_file is not None:
            env["FLYWHEEL_KAFKA_SSL_CAFILE"] = str(self.ca_file)
        return env

    def _credentials(self, user: str | None) -> tuple[str | None, str | None]:
        users = self.security.scram_users if self.security is not None else {}
        if user is None and users:
            user = next(iter(users))
        if user is None or user == _BROKER_USER:
            return _BROKER_USER, self._secrets(create=False).get("broker_password")
        if user not in users:
            raise KeyError(f"no SCRAM user {user!r} in this broker's security settings")
        return user, users[user]

    def _probe_options(self) -> dict[str, Any]:
        """How readiness probes reach the running broker: as recorded when it started, logged
        in as the broker's own user."""
        protocol = str(self._read_state().get("security_protocol") or "PLAINTEXT")
        ca = self.security_dir / "ca.pem"
        ca_file = ca if ca.is_file() else None  # gone: the probe then fails rather than raises
        password = self._secrets(create=False).get("broker_password")
        return _security_options(protocol, ca_file, _BROKER_USER, password)

    def _secrets(self, *, create: bool = True) -> dict[str, Any]:
        """``security/secrets.json``: generated passwords (created on first use)."""
        path = self.security_dir / _SECRETS_FILE
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
        if not create:
            return {}
        data = {
            "salt": secrets.token_hex(8),
            "broker_password": secrets.token_urlsafe(24),
            "keystore_password": secrets.token_urlsafe(24),
        }
        self._write_secrets(data)
        return data

    def _write_secrets(self, data: Mapping[str, Any]) -> None:
        self.security_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.security_dir, 0o700)
        tmp = self.security_dir / f".{_SECRETS_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
        tmp.replace(self.security_dir / _SECRETS_FILE)

    def _security_properties(self, security: KafkaSecurity) -> dict[str, str]:
        """The client listener (named after its protocol) secured; brokers use it too."""
        protocol = listener = security.protocol
        props = {
            "listeners": (
                f"{listener}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"{listener}://127.0.0.1:{self.port}",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"{listener}:{protocol},CONTROLLER:PLAINTEXT",
        }
        secret = self._secrets()
        prefix = f"listener.name.{listener.lower()}"
        if security.sasl:
            props.update(
                {
                    "sasl.enabled.mechanisms": SCRAM_MECHANISM,
                    "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
                    f"{prefix}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required "
                        f'username="{_BROKER_USER}" password="{secret["broker_password"]}";'
                    ),
                }
            )
        if security.tls:
            props.update(
                {
                    "ssl.keystore.type": "PKCS12",
                    "ssl.keystore.location": str(self.security_dir / "broker.p12"),
                    "ssl.keystore.password": secret["keystore_password"],
                    "ssl.key.password": secret["keystore_password"],
                    # The broker connects to itself too (transaction markers): it trusts the CA.
                    "ssl.truststore.type": "PEM",
                    "ssl.truststore.location": str(self.security_dir / "ca.pem"),
                    "ssl.client.auth": "none",
                }
            )
        return props

    def _ensure_tls(self, java: str) -> None:
        """A CA and a broker certificate for 127.0.0.1/localhost, made once per data dir.

        The CA's key is thrown away once the broker certificate is signed: nothing else can
        be signed with it. Four rounds of keytool JVMs (about 2-3 s), on the first start only.
        """
        ca_pem, keystore = self.security_dir / "ca.pem", self.security_dir / "broker.p12"
        secret = self._secrets()
        if ca_pem.is_file() and keystore.is_file():
            return
        keytool = _keytool(java)
        tmp = self.security_dir / f"tls.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        pw = secret["keystore_password"]
        fast = ["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC", "-J-Xshare:auto"]

        def kt(*args: str, keystore: str) -> list[str]:
            return [keytool, *fast, *args, "-keystore", keystore, "-storetype", "PKCS12",
                    "-storepass", pw]  # fmt: skip

        gen = ("-genkeypair", "-keyalg", "EC", "-groupname", "secp256r1", "-validity", _TLS_DAYS,
               "-keypass", pw)  # fmt: skip
        ca_ks, broker_ks = str(tmp / "ca.p12"), str(tmp / "broker.p12")
        csr, cert, ca_out, chain = (str(tmp / f) for f in ("csr", "cert.pem", "ca.pem", "chain"))
        ca_ext = ("-ext", "bc:c", "-ext", "KU:c=keyCertSign,cRLSign")
        leaf_ext = ("-ext", "SAN=dns:localhost,ip:127.0.0.1", "-ext", "KU:c=digitalSignature",
                    "-ext", "EKU=serverAuth,clientAuth")  # fmt: skip
        started = time.monotonic()
        _run_tools(
            ("-genkeypair (CA)", kt(*gen, "-alias", "ca", "-dname", "CN=Flywheel devkafka CA",
                                    *ca_ext, keystore=ca_ks)),
            ("-genkeypair (broker)", kt(*gen, "-alias", "broker", "-dname", "CN=localhost",
                                        keystore=broker_ks)),
        )  # fmt: skip
        _run_tools(
            ("-certreq", kt("-certreq", "-alias", "broker", "-file", csr, keystore=broker_ks)),
            ("-exportcert", kt("-exportcert", "-rfc", "-alias", "ca", "-file", ca_out,
                               keystore=ca_ks)),
        )  # fmt: skip
        _run_tools(
            ("-gencert", kt("-gencert", "-rfc", "-alias", "ca", "-infile", csr, "-outfile", cert,
                            "-validity", _TLS_DAYS, *leaf_ext, keystore=ca_ks)),
        )  # fmt: skip
        Path(chain).write_text(Path(cert).read_text() + Path(ca_out).read_text())
        _run_tools(
            ("-importcert", kt("-importcert", "-noprompt", "-alias", "broker", "-file", chain,
                               keystore=broker_ks)),
        )  # fmt: skip
        Path(broker_ks).replace(keystore)
        Path(ca_out).replace(ca_pem)  # last: both present means complete
        shutil.rmtree(tmp, ignore_errors=True)
        _say(
            "generated a throwaway CA and a broker certificate in "
            f"{time.monotonic() - started:.1f}s: clients verify with {ca_pem}"
        )

    def _check_scram_users(
        self, security: KafkaSecurity, secret: Mapping[str, Any], digest: str
    ) -> None:
        """SCRAM users exist only if the storage was formatted with them: say so if not."""
        if secret.get("scram_users") == digest:
            return
        names = secret.get("scram_names")
        had = (
            f"with other SCRAM users or passwords ({', '.join(names) or 'none'})"
            if names is not None
            else "without SCRAM users"
        )
        raise KafkaStartError(
            f"the data dir {self.data_dir} was first started {had}, and SCRAM users are "
            "created only when the storage is formatted: ask for that same set, or use a new "
            f"--data-dir (or delete this one) for {', '.join(sorted(security.scram_users))}"
        )
