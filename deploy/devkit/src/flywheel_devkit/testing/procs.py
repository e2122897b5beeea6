"""Run a service as a real subprocess in tests (real HTTP, real signals)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from flywheel_devkit.kafka import pick_free_port


def metric_sum(text: str, name: str) -> float:
    """Sum of a Prometheus metric's samples (every label set) in an exposition text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_to_exit(
    module: str, env: Mapping[str, str], unset: tuple[str, ...] = (), timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE`` on a free port, run until it exits by itself (a service that must
    refuse to start): this environment plus ``env``, without ``unset``; output captured."""
    service = module.removeprefix("flywheel_").upper()
    full = {**os.environ, f"FLYWHEEL_{service}_PORT": str(pick_free_port()), **env}
    for name in unset:
        full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", module], env=full, capture_output=True, text=True, timeout=timeout
    )


class ServiceProcess:
    """``python -m MODULE`` with an environment, waited on until ``/readyz`` answers 200."""

    def __init__(self, module: str, env: dict[str, str], port: int, log_path: Path) -> None:
        self.module = module
        self.env = {**os.environ, **env}
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The PID of the running process."""
        assert self.proc is not None, f"{self.module} was never started"
        return self.proc.pid

    @property
    def url(self) -> str:
        """Base URL of the service."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 60.0, *, wait: bool = True) -> ServiceProcess:
        """Start the process and (unless ``wait`` is False) wait until it is ready."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=log
        )
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request: (status, headers with lower-case names, body), 4xx/5xx included."""
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def ready(self) -> bool:
        """True if ``/readyz`` answers 200 now."""
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll ``/readyz`` until 200; raise with the log tail if the deadline passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.module} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready after {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The last lines of the process log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self, *, tree: bool = False) -> None:
        """SIGKILL: no cleanup, no flush, no commit. With ``tree``, every process below it dies
        in the same instant too (a container or pod killed: workers, warm training runs).
        Returns once every one of them is dead: none holds a socket any more (a worker still
        dying would accept a connection into its listen backlog, then reset it)."""
        if self.proc is None:
            return
        below = descendants(self.proc.pid) if tree else []
        self.proc.send_signal(signal.SIGKILL)
        for pid in below:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while alive := [pid for pid in below if _alive(pid)]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {alive} outlived SIGKILL by 10 s")
            time.sleep(0.005)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (then SIGKILL); returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, …), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and ')'
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie (dead, not yet reaped) has closed its files."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    """A process's command line ('' when it is gone)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
