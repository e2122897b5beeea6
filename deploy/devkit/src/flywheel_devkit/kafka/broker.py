"""The broker's lifecycle: start, stop, restart."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from types import TracebackType

from .config import BrokerConfig
from .maven import KafkaStartError, _file_lock, _java, _say, resolve_jars
from .probe import (
    _port_free,
    _probe_in_thread,
    _tcp_open,
    pick_free_port,
    wait_for_kafka,
)
from .state import _MAIN_CLASS


class LocalKafka(BrokerConfig):
    """A single-node KRaft Kafka broker running as a child JVM on 127.0.0.1.

    The data directory holds everything (cluster id, topics, offsets, pid), so a
    broker started by one process can be inspected, restarted or stopped from
    another one by constructing ``LocalKafka(data_dir)`` there (ports are read back
    from the data directory when not given).
    """

    def is_ready(self, timeout: float = 5.0) -> bool:
        """True if the broker is alive and answers a Metadata request."""
        return (
            self.is_running()
            and _tcp_open("127.0.0.1", self.port)
            and _probe_in_thread(self.bootstrap, timeout, self._probe_options())
        )

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalKafka:
        """Start the broker (formatting storage on first use) and wait until it answers.

        Idempotent: if this data directory's broker already runs (maybe started by
        another process), adopts its ports and only waits for it to answer.
        Raises :class:`KafkaStartError` with the tail of ``broker.log`` on failure.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".start.lock"):
            if self.is_running():
                state = self._read_state()
                running = state.get("security_protocol") or "PLAINTEXT"
                if self.security is not None and running != self.security.protocol:
                    raise KafkaStartError(
                        f"the broker of {self.data_dir} already runs with {running}, not "
                        f"{self.security.protocol}; stop it first"
                    )
                self.port = int(state.get("port", self.port))
                self.controller_port = state.get("controller_port", self.controller_port)
                wait_for_kafka(
                    self.bootstrap,
                    timeout,
                    is_alive=self.is_running,
                    client_options=self._probe_options(),
                )
                return self
            return self._launch(timeout)

    def _launch(self, timeout: float) -> LocalKafka:
        if self.port == 0:
            self.port = pick_free_port()
        if self._requested_controller_port is None:
            self.controller_port = pick_free_port()
            while self.controller_port == self.port:
                self.controller_port = pick_free_port()
        for name, p in (("port", self.port), ("controller port", self.controller_port)):
            if p is None or not _port_free(p):
                raise KafkaStartError(
                    f"{name} {p} on 127.0.0.1 is already in use (another Kafka running?); "
                    "choose another with --port or stop the other broker"
                )

        libs = resolve_jars(self.cache_dir)
        java = _java()
        if self.security is not None and self.security.tls:
            self._ensure_tls(java)
        self._write_config()
        self._format_storage(java, libs)
        self._finish_cds_dump(keep=False)  # a broker that died unstopped may have left one
        cds, dump = self._cds_flags(java, libs)

        cmd = [
            java,
            f"-Xmx{self.heap_max}",
            f"-Xms{self.heap_min}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            *cds,
            *shlex.split(os.environ.get("FLYWHEEL_KAFKA_JVM_OPTS", "")),
            "-cp",
            f"{libs}{os.sep}*",
            _MAIN_CLASS,
            str(self.properties_file),
        ]
        with self.broker_log.open("ab") as log:
            self._log_offset = log.tell()
            log.write(
                f"===== devkafka start {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                f"{shlex.join(cmd)}\n".encode()
            )
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C aimed at the launching shell must not kill it.
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        self._write_state(
            pid=self._proc.pid,
            port=self.port,
            controller_port=self.controller_port,
            bootstrap=self.bootstrap,
            cluster_id=self.cluster_id,
            cds_dump=str(dump) if dump else None,
            security_protocol=self.security.protocol if self.security is not None else None,
        )
        try:
            wait_for_kafka(
                self.bootstrap,
                timeout,
                is_alive=self.is_running,
                describe_failure=self.log_tail,
                client_options=self._probe_options(),
            )
        except BaseException:
            # Don't leave a half-started JVM behind (the error already carries the log tail).
            with contextlib.suppress(Exception):
                self.stop(timeout=10)
            raise
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker: SIGTERM (clean shutdown), then SIGKILL after ``timeout``.

        Works from any process via the pid file. Returns True if a broker was running.
        """
        pid = self._recorded_pid()
        if pid is None or not self._is_our_broker(pid):
            self._cleanup_after_exit(clean=False)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        clean = self._wait_gone(pid, timeout)
        if not clean:
            _say(f"broker pid {pid} ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise KafkaStartError(f"broker pid {pid} survived SIGKILL")
        self._cleanup_after_exit(clean=clean)
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)  # reaps the child, so no zombie is left
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._is_our_broker(pid):
                return True
            time.sleep(0.05)
        return not self._is_our_broker(pid)

    def _cleanup_after_exit(self, *, clean: bool) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None:
            self.pid_file.unlink(missing_ok=True)
            if self.data_dir.is_dir():
                self._finish_cds_dump(keep=clean)
                self._write_state(pid=None)

    def restart(self, timeout: float = 60.0) -> LocalKafka:
        """Stop (if running) and start again on the same port and data directory."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafka(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"
