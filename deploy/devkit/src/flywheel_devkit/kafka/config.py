"""The broker's generated configuration: ``server.properties``, log4j, storage format, CDS."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path

from .maven import _MARKER, KafkaStartError
from .probe import _new_cluster_id
from .secured import SecuredBroker
from .security import _BROKER_USER, SCRAM_MECHANISM
from .state import NODE_ID

_STORAGE_TOOL = "kafka.tools.StorageTool"

_LOG4J2_BROKER = """\
# Written by flywheel_devkit.kafka on every start; edits are overwritten.
status = warn
# The JVM's own shutdown hook would race Kafka's; console output needs no flush.
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# Each config object logs every key at INFO: ~1000 lines per start. server.properties has it.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

_LOG4J2_TOOL = """\
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
"""


class BrokerConfig(SecuredBroker):
    """The files a broker start writes and the storage it formats."""

    def _properties(self) -> dict[str, str]:
        assert self.controller_port is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            # Static voter set (kraft.version 0): unlike the dynamic quorum that
            # `format --standalone` creates, it does not pin the controller endpoint
            # into the metadata log, so the controller port may change per start.
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Both default to 50 partitions, created on the first group / transaction:
            # needless on one node, and it slows first use and every restart.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "num.network.threads": "2",
            "num.io.threads": "4",
            # Default is 128 MiB allocated on the heap at startup; too much for -Xmx512m.
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        }
        if self.security is not None:
            props.update(self._security_properties(self.security))
        props.update(self.extra_properties)
        return props

    def _write_config(self) -> None:
        lines = [f"# Written by flywheel_devkit.kafka on {time.strftime('%Y-%m-%d %H:%M:%S')}"]
        lines += [f"{k}={v}" for k, v in self._properties().items()]
        if self.security is not None:  # it holds the keystore and broker passwords
            self.properties_file.touch(mode=0o600)
            os.chmod(self.properties_file, 0o600)
        self.properties_file.write_text("\n".join(lines) + "\n")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2_BROKER)
        (self.data_dir / "log4j2-tools.properties").write_text(_LOG4J2_TOOL)

    def _format_storage(self, java: str, libs: Path) -> None:
        security = self.security if self.security is not None and self.security.sasl else None
        formatted = (self.log_dir / "meta.properties").is_file()
        scram: list[str] = []
        digest = None
        if security is not None:
            secret = self._secrets()
            digest = security.digest(secret["salt"])
            if formatted:
                self._check_scram_users(security, secret, digest)
                return
            users = {_BROKER_USER: secret["broker_password"], **security.scram_users}
            for name, password in users.items():
                scram += ["--add-scram", f'{SCRAM_MECHANISM}=[name="{name}",password="{password}"]']
        if formatted:
            return  # already formatted: keep the cluster id and all data
        cluster_id = _new_cluster_id()
        cds, _ = self._cds_flags(java, libs, dump_if_missing=False)
        cmd = [
            java,
            "-Xmx256m",
            *cds,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2-tools.properties'}",
            "-cp",
            f"{libs}{os.sep}*",
            _STORAGE_TOOL,
            "format",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_file),
            *scram,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise KafkaStartError(
                f"kafka-storage format failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        if security is not None:
            self._write_secrets(
                {
                    **self._secrets(),
                    "scram_users": digest,
                    "scram_names": sorted(security.scram_users),
                }
            )

    def _cds_flags(
        self, java: str, libs: Path, *, dump_if_missing: bool = True
    ) -> tuple[list[str], Path | None]:
        """AppCDS archive flags: dump on the first clean exit, reuse it afterwards.

        Loading Kafka's ~45 jars dominates startup; a dynamic class-data-sharing
        archive cuts a warm start from ~3 s to ~1.7 s. The archive is keyed on the
        jar set and the JVM binary; a mismatching or corrupt archive is ignored by
        the JVM (``-Xshare:auto``), so this can only make things faster.
        """
        if os.environ.get("FLYWHEEL_KAFKA_CDS", "1") == "0":
            return [], None
        marker = (libs / _MARKER).read_text().strip() if (libs / _MARKER).is_file() else ""
        real_java = os.path.realpath(java)
        key = hashlib.sha256(f"{marker}|{real_java}".encode()).hexdigest()[:16]
        archive = self.cache_dir / f"kafka-{key}.jsa"
        # The dump run prints ~60 harmless "[cds] skipping class" warnings otherwise.
        quiet = ["-Xshare:auto", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
        if archive.is_file() and archive.stat().st_size > 0:
            return [*quiet, f"-XX:SharedArchiveFile={archive}"], None
        if not dump_if_missing:
            return [], None
        dump = self.cache_dir / f"kafka-{key}.jsa.tmp-{uuid.uuid4().hex[:8]}"
        return [*quiet, f"-XX:ArchiveClassesAtExit={dump}"], dump

    def _finish_cds_dump(self, *, keep: bool) -> None:
        """Promote the archive a cleanly stopped broker dumped; drop any other leftover."""
        dump = self._read_state().get("cds_dump")
        if not dump:
            return
        tmp = Path(dump)
        final = tmp.with_name(tmp.name.split(".tmp-")[0])
        # Only a JVM that exited normally wrote a complete archive.
        if keep and tmp.is_file() and tmp.stat().st_size > 0 and not final.exists():
            tmp.replace(final)
        tmp.unlink(missing_ok=True)
        self._write_state(cds_dump=None)
