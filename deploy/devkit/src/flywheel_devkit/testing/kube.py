"""A real Kubernetes API server for tests: etcd + kube-apiserver on loopback.

``start_kube(tmp_dir)`` (or ``with KubeAPI.start(tmp_dir) as kube:``) starts

- etcd (Debian ``etcd-server``) on two free loopback ports, its data under ``tmp_dir``;
- kube-apiserver (built by ``deploy/tools/install.sh``) on a free loopback secure port, with
  a self-signed serving certificate it generates itself (``--cert-dir``), token auth
  (``--token-auth-file``: one admin token in group ``system:masters``), RBAC authorization
  (so charts' Roles/RoleBindings are real objects; ``system:masters`` bypasses them), a
  service-account signing key, and the default admission plugins minus ``ServiceAccount``;

waits until ``/readyz`` answers 200 (bounded; the error carries both log tails), and writes
a kubeconfig for helm/kubectl. Binaries are looked up in ``$FLYWHEEL_TOOLS/bin`` (default
``~/.cache/flywheel-tools/bin``), then ``PATH``; when missing, :class:`KubeToolsMissing` says
to run ``deploy/tools/install.sh`` (tests must fail, not skip).

Only the API server runs: no controller-manager, scheduler or kubelet. So

- nothing reconciles: Jobs get no Pods, Deployments no ReplicaSets, and status changes only
  when a test writes it (a merge patch on ``.../jobs/NAME/status``). The server validates
  Job status like a real controller's: ``Complete=True`` needs a ``SuccessCriteriaMet=True``
  condition too, plus ``startTime`` and ``completionTime``; ``Failed=True`` needs
  ``FailureTarget=True`` and ``startTime`` (else 422);
- namespaces other than ``default``, ``kube-system``, ``kube-public`` and
  ``kube-node-lease`` must be created explicitly (:meth:`KubeAPI.create_namespace`), and a
  deleted namespace stays ``Terminating`` forever (nothing removes its finalizer);
- no ``default`` ServiceAccount appears in new namespaces; that is why the ``ServiceAccount``
  admission plugin is disabled (it would reject every Pod), and no garbage collection runs
  (``ownerReferences`` do not cascade).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from flywheel_devkit.kafka import pick_free_port

__all__ = [
    "KubeAPI",
    "KubeStartError",
    "KubeToolsMissing",
    "find_kube_binaries",
    "start_kube",
    "tools_bin_dir",
]

ADMIN_TOKEN_USER = "flywheel-admin"
_INSTALL_HINT = "run deploy/tools/install.sh (builds/installs them into $FLYWHEEL_TOOLS/bin)"


class KubeToolsMissing(RuntimeError):
    """etcd or kube-apiserver is not installed."""


class KubeStartError(RuntimeError):
    """etcd or kube-apiserver did not start or did not become ready."""


def tools_bin_dir() -> Path:
    """``$FLYWHEEL_TOOLS/bin`` (default ``~/.cache/flywheel-tools/bin``)."""
    root = os.environ.get("FLYWHEEL_TOOLS") or str(Path.home() / ".cache" / "flywheel-tools")
    return Path(root) / "bin"


def _find(name: str) -> Path | None:
    candidate = tools_bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def find_kube_binaries() -> tuple[Path, Path]:
    """Paths of ``(etcd, kube-apiserver)``; raises :class:`KubeToolsMissing` naming the fix."""
    etcd, apiserver = _find("etcd"), _find("kube-apiserver")
    missing = [n for n, p in (("etcd", etcd), ("kube-apiserver", apiserver)) if p is None]
    if etcd is None or apiserver is None:
        raise KubeToolsMissing(
            f"{' and '.join(missing)} not found in {tools_bin_dir()} or on PATH: {_INSTALL_HINT}"
        )
    return etcd, apiserver


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _signing_key(path: Path) -> None:
    """An RSA private key (PEM) for service-account tokens, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        raise KubeToolsMissing("openssl not found on PATH (needed for the service-account key)")
    proc = subprocess.run(
        ["openssl", "genrsa", "-out", str(path), "2048"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise KubeStartError(f"openssl genrsa failed: {proc.stderr}")


@dataclass
class KubeAPI:
    """A running etcd + kube-apiserver pair (see the module docstring for what is missing).

    ``url`` is ``https://127.0.0.1:PORT``; authenticate with ``Authorization: Bearer
    {token}`` and verify TLS against ``ca_file`` (the self-signed serving certificate).
    ``kubeconfig`` is a file for ``helm --kubeconfig`` / ``kubectl --kubeconfig`` /
    ``KUBECONFIG``.
    """

    root: Path
    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    etcd_url: str
    remove_root: bool = True
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list, repr=False)

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        tmp_dir: str | os.PathLike[str] | None = None,
        *,
        ready_timeout: float = 120.0,
        extra_args: list[str] | None = None,
        keep_data: bool = False,
    ) -> KubeAPI:
        """Start etcd and kube-apiserver; return once ``/readyz`` is 200.

        Data, certificates and logs go to a fresh directory under ``tmp_dir`` (default: the
        system temp dir), removed by :meth:`stop` unless ``keep_data``. ``extra_args`` are
        appended to kube-apiserver's command line (later flags win).
        """
        etcd_bin, apiserver_bin = find_kube_binaries()
        if tmp_dir is not None:
            Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="kube-", dir=tmp_dir))
        etcd_port, peer_port, secure_port = pick_free_port(), pick_free_port(), pick_free_port()
        token = os.urandom(24).hex()
        cert_dir = root / "certs"
        kube = cls(
            root=root,
            url=f"https://127.0.0.1:{secure_port}",
            token=token,
            ca_file=cert_dir / "apiserver.crt",
            kubeconfig=root / "kubeconfig",
            etcd_url=f"http://127.0.0.1:{etcd_port}",
            remove_root=not keep_data,
        )
        atexit.register(kube.stop)
        try:
            kube._start_etcd(etcd_bin, peer_port, ready_timeout)
            (root / "tokens.csv").write_text(
                f'{token},{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},"system:masters"\n'
            )
            _signing_key(root / "sa.key")
            args = [
                str(apiserver_bin),
                f"--etcd-servers={kube.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={secure_port}",
                f"--cert-dir={cert_dir}",
                f"--token-auth-file={root / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                "--disable-admission-plugins=ServiceAccount",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-signing-key-file={root / 'sa.key'}",
                f"--service-account-key-file={root / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *(extra_args or []),
            ]
            kube._spawn("kube-apiserver", args)
            kube._wait_ready(ready_timeout)
            kube._write_kubeconfig()
        except BaseException:
            kube.stop()
            raise
        return kube

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
            )
        finally:
            log.close()
        self._procs.append((name, proc))

    def _start_etcd(self, etcd_bin: Path, peer_port: int, timeout: float) -> None:
        peer = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(etcd_bin),
                "--name=kube",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kube={peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ],
        )
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if httpx.get(f"{self.etcd_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise KubeStartError(f"etcd not healthy after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise KubeStartError(f"{name} exited with {proc.returncode}:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        # The serving certificate is written during startup: poll unverified, then check
        # that the certificate it wrote verifies the connection.
        with httpx.Client(verify=False, timeout=5, headers=self.headers) as client:
            while True:
                self._check_alive()
                try:
                    resp = client.get(f"{self.url}/readyz")
                    if resp.status_code == 200:
                        break
                    last = f"{resp.status_code}: {resp.text[-2000:]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise KubeStartError(
                        f"kube-apiserver not ready after {timeout} s (last /readyz {last}):\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.2)
        with self.client() as client:
            client.get("/readyz").raise_for_status()

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            "- name: flywheel-test\n"
            "  cluster:\n"
            f"    server: {self.url}\n"
            f"    certificate-authority: {self.ca_file}\n"
            "users:\n"
            f"- name: {ADMIN_TOKEN_USER}\n"
            "  user:\n"
            f"    token: {self.token}\n"
            "contexts:\n"
            "- name: flywheel-test\n"
            "  context:\n"
            "    cluster: flywheel-test\n"
            f"    user: {ADMIN_TOKEN_USER}\n"
            "    namespace: default\n"
            "current-context: flywheel-test\n"
        )
        self.kubeconfig.chmod(0o600)

    def stop(self) -> None:
        """Terminate kube-apiserver, then etcd; remove the data dir. Idempotent."""
        atexit.unregister(self.stop)
        for _name, proc in reversed(self._procs):
            _stop(proc, timeout=20)
        self._procs.clear()
        if self.remove_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> KubeAPI:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------------------
    @property
    def headers(self) -> dict[str, str]:
        """The admin bearer-token header."""
        return {"Authorization": f"Bearer {self.token}"}

    def env(self) -> dict[str, str]:
        """Environment for helm/kubectl subprocesses: ``KUBECONFIG`` pointing here."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the server against ``ca_file`` (for httpx ``verify=``, aiohttp, ...)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` with ``base_url``, the admin token and TLS verification."""
        kwargs.setdefault("timeout", 30)
        return httpx.Client(
            base_url=self.url, headers=self.headers, verify=self.ssl_context(), **kwargs
        )

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """Like :meth:`client`, async."""
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(
            base_url=self.url, headers=self.headers, verify=self.ssl_context(), **kwargs
        )

    def create_namespace(self, name: str) -> None:
        """Create a namespace (no controller-manager runs: nothing else will). Idempotent."""
        with self.client() as client:
            resp = client.post(
                "/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
            if resp.status_code != 409:
                resp.raise_for_status()

    def log_tail(self, lines: int = 40) -> str:
        """The ends of the etcd and kube-apiserver logs."""
        parts = []
        for name in ("etcd", "kube-apiserver"):
            path = self.root / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name} ({path}) ---\n{_tail(path, lines)}")
        return "\n".join(parts)


def start_kube(
    tmp_dir: str | os.PathLike[str] | None = None,
    *,
    ready_timeout: float = 120.0,
    extra_args: list[str] | None = None,
    keep_data: bool = False,
) -> KubeAPI:
    """Start etcd + kube-apiserver (see :meth:`KubeAPI.start`); use as a context manager."""
    return KubeAPI.start(
        tmp_dir, ready_timeout=ready_timeout, extra_args=extra_args, keep_data=keep_data
    )
