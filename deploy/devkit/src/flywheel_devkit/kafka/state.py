"""The broker's data directory: paths, recorded state, the running process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .maven import default_cache_dir, default_data_dir
from .probe import _pid_cmdline
from .security import _SECURITY_DIR, KafkaSecurity

NODE_ID = 1
_MAIN_CLASS = "kafka.Kafka"
_STATE_FILE = "devkafka.json"
_PID_FILE = "broker.pid"
_LOG_FILE = "broker.log"


class BrokerState:
    """A broker's data directory and what it records (no process is started here)."""

    data_dir: Path
    cache_dir: Path
    port: int
    controller_port: int | None
    security: KafkaSecurity | None
    _proc: subprocess.Popen[bytes] | None
    _log_offset: int

    def __init__(
        self,
        data_dir: Path | str | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        cache_dir: Path | str | None = None,
        *,
        heap_max: str = "512m",
        heap_min: str = "256m",
        extra_properties: Mapping[str, str] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        """Describe a broker; nothing starts until :meth:`start`.

        ``port=None`` reuses the port recorded in the data directory, else 9092;
        ``port=0`` picks a free port at first start (kept across restarts).
        ``controller_port=None`` picks a free port at each start.
        ``security``: SASL/SCRAM and/or TLS on the client listener (see
        :class:`KafkaSecurity`); None is PLAINTEXT. It applies to each start and is not
        remembered, but a broker that already runs is adopted with whatever it runs.
        """
        self.data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
        self.cache_dir = Path(cache_dir or default_cache_dir()).expanduser().resolve()
        state = self._read_state()
        if port is None:
            port = int(state.get("port", 9092))
        self.port = port
        self._requested_controller_port = controller_port
        self.controller_port = controller_port or state.get("controller_port")
        self.heap_max = heap_max
        self.heap_min = heap_min
        self.extra_properties = dict(extra_properties or {})
        self.security = (
            security if security is not None and security.protocol != "PLAINTEXT" else None
        )
        self._proc = None
        self._log_offset = 0

    # ---- paths & state -------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        """Kafka ``log.dirs`` (topic data and KRaft metadata)."""
        return self.data_dir / "logs"

    @property
    def broker_log(self) -> Path:
        """The broker's combined stdout/stderr log file."""
        return self.data_dir / _LOG_FILE

    @property
    def pid_file(self) -> Path:
        """File holding the running broker's pid."""
        return self.data_dir / _PID_FILE

    @property
    def properties_file(self) -> Path:
        """The generated ``server.properties``."""
        return self.data_dir / "server.properties"

    @property
    def security_dir(self) -> Path:
        """Certificates and secrets of a secured broker (mode 0700)."""
        return self.data_dir / _SECURITY_DIR

    @property
    def security_protocol(self) -> str:
        """The client listener's protocol: the requested one, else the running broker's."""
        if self.security is not None:
            return self.security.protocol
        recorded = self._read_state().get("security_protocol")
        return str(recorded) if recorded and self.is_running() else "PLAINTEXT"

    @property
    def ca_file(self) -> Path | None:
        """PEM file of the CA that signed the broker's certificate (with TLS), for clients."""
        if self.security_protocol in ("SSL", "SASL_SSL"):
            return self.security_dir / "ca.pem"
        return None

    @property
    def cluster_id(self) -> str | None:
        """Cluster id from ``meta.properties`` once storage is formatted."""
        meta = self.log_dir / "meta.properties"
        if not meta.is_file():
            return None
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return None

    @property
    def pid(self) -> int | None:
        """Pid of the running broker, or ``None``."""
        pid = self._recorded_pid()
        return pid if pid is not None and self._is_our_broker(pid) else None

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / _STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, **values: Any) -> None:
        state = self._read_state()
        state.update(values)
        tmp = self.data_dir / f".{_STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.data_dir / _STATE_FILE)

    def _recorded_pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        cmdline = _pid_cmdline(pid)
        # Guards against a recycled pid: it must be kafka.Kafka on *our* properties file.
        return (
            cmdline is not None and _MAIN_CLASS in cmdline and str(self.properties_file) in cmdline
        )

    def is_running(self) -> bool:
        """True if this data directory's broker process is alive (ready or not)."""
        return self.pid is not None

    def log_tail(self, lines: int = 60, *, since_start: bool = True) -> str:
        """Last ``lines`` lines of ``broker.log`` (by default only from the latest start)."""
        try:
            with self.broker_log.open("rb") as fh:
                if since_start:
                    fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return "(no broker.log)"
        text = data.decode(errors="replace").splitlines()[-lines:]
        return f"--- tail of {self.broker_log} ---\n" + "\n".join(text)
