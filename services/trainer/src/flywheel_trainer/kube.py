"""Training runs as Kubernetes Jobs (``FLYWHEEL_TRAINER_EXECUTOR=kubernetes``).

The same worker, the same recipe contract and the same reproducibility record as a local run;
only the process is a pod. The trainer writes the job to the artifact store
(``trainer/jobs/<run_id>/job.json``, without the registry token: the pod reads that from its
own environment), creates a ``batch/v1`` Job that runs ``python -m flywheel_trainer.worker
--from-store trainer/jobs/<run_id>``, watches the Job's status and reads the pod's
``result.json`` back from the store. The Job's name derives from the run id, so a trainer that
restarts mid-run finds the Job it created instead of starting a second one.

Talks to the API server over plain HTTPS (httpx): in a cluster with the pod's service account
(token, CA and namespace under ``/var/run/secrets/kubernetes.io/serviceaccount``), or with an
explicit URL and token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx

from flywheel_shared.storage import ObjectStore

from .settings import TrainerSettings
from .worker import TrainJob, TrainResult

log = logging.getLogger(__name__)
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
JOBS_PREFIX = "trainer/jobs"


def job_name(run_id: str) -> str:
    """A DNS-1123 name unique per run (Job names are at most 63 characters)."""
    return f"flywheel-train-{hashlib.sha256(run_id.encode()).hexdigest()[:16]}"


class KubernetesError(RuntimeError):
    """The API server refused a request (or could not be reached)."""


class KubernetesExecutor:
    """Runs each training job as a Kubernetes Job and waits for its result."""

    def __init__(self, settings: TrainerSettings, store: ObjectStore) -> None:
        self.settings, self.store = settings, store
        url = settings.k8s_api_url
        token = settings.k8s_token.get_secret_value() if settings.k8s_token else None
        verify: str | bool = settings.k8s_verify
        if url is None:  # in the cluster
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise KubernetesError(
                    "FLYWHEEL_TRAINER_EXECUTOR=kubernetes needs FLYWHEEL_TRAINER_K8S_API_URL "
                    "outside a cluster"
                )
            url = f"https://{host}:{port}"
        if token is None:
            token_file = Path(settings.k8s_token_file or SA_DIR / "token")
            token = token_file.read_text().strip() if token_file.exists() else None
        if verify is True:
            ca = settings.k8s_ca_file or (
                str(SA_DIR / "ca.crt") if (SA_DIR / "ca.crt").exists() else None
            )
            verify = ca or True
        self.namespace = settings.k8s_namespace or _in_cluster_namespace() or "default"
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=url, headers=headers, verify=verify, timeout=30)
        if not settings.k8s_image:
            raise KubernetesError(
                "FLYWHEEL_TRAINER_EXECUTOR=kubernetes needs FLYWHEEL_TRAINER_K8S_IMAGE"
            )

    # -- the executor interface (as WarmWorker) ------------------------------------------------
    def prepare(self) -> None:
        """Nothing to warm: the cluster starts pods."""

    async def close(self) -> None:
        await self.http.aclose()

    async def run(self, job: TrainJob, timeout_s: float) -> TrainResult:
        """Create (or find) the run's Job, wait for it, return the worker's result."""
        prefix = f"{JOBS_PREFIX}/{job.run_id}"
        stored = job.model_copy(update={"registry_token": None})
        await asyncio.to_thread(
            self.store.put, f"{prefix}/job.json", stored.model_dump_json(by_alias=True).encode()
        )
        name = job_name(job.run_id)
        try:
            await self._create(self.manifest(job, name, prefix, timeout_s))
            status = await self._wait(name, timeout_s)
        except KubernetesError as exc:
            return TrainResult(status="failed", error=str(exc), retryable=True)
        if status == "timeout":
            await self._delete(name)
            return TrainResult(status="failed", error=f"recipe timed out after {timeout_s:g} s")
        key = f"{prefix}/result.json"
        if await asyncio.to_thread(self.store.exists, key):
            return TrainResult.model_validate_json(await asyncio.to_thread(self.store.get, key))
        return TrainResult(status="failed", error=f"Job {name} {status} without a result: {status}")

    # -- the Job -------------------------------------------------------------------------------
    def manifest(self, job: TrainJob, name: str, prefix: str, timeout_s: float) -> dict[str, Any]:
        """The ``batch/v1`` Job that runs one training."""
        s = self.settings
        env = [
            {"name": "FLYWHEEL_STORAGE_URI", "value": job.storage_uri},
            {"name": "BENTOML_DO_NOT_TRACK", "value": "true"},
            *({"name": k, "value": v} for k, v in sorted(s.k8s_env.items())),
        ]
        container: dict[str, Any] = {
            "name": "train",
            "image": s.k8s_image,
            "imagePullPolicy": s.k8s_image_pull_policy,
            "command": ["python", "-m", "flywheel_trainer.worker", "--from-store", prefix],
            "env": env,
            "envFrom": [{"secretRef": {"name": n}} for n in s.k8s_env_from_secrets],
            "resources": s.k8s_resources,
            "securityContext": {
                "runAsNonRoot": True,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            # The pod's own emptyDir at /tmp (the root filesystem is read-only).
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
        }
        labels = {
            "app.kubernetes.io/name": "flywheel-trainer-run",
            "app.kubernetes.io/part-of": "flywheel",
            "flywheel.dev/model": job.model,
        }
        pod: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "nodeSelector": s.k8s_node_selector,
            "tolerations": s.k8s_tolerations,
            # As the chart's pods: non-root, the runtime's seccomp profile, no API token.
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": s.k8s_run_as_user,
                "runAsGroup": s.k8s_run_as_user,
                "fsGroup": s.k8s_run_as_user,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "automountServiceAccountToken": False,
        }
        if s.k8s_service_account:
            pod["serviceAccountName"] = s.k8s_service_account
        if s.k8s_image_pull_secrets:
            pod["imagePullSecrets"] = [{"name": n} for n in s.k8s_image_pull_secrets]
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {
                    "flywheel.dev/run-id": job.run_id,
                    "flywheel.dev/correlation-id": job.correlation_id,
                },
            },
            "spec": {
                "backoffLimit": 0,  # the trainer's scheduler decides about retries
                "activeDeadlineSeconds": max(1, int(timeout_s)),
                "ttlSecondsAfterFinished": s.k8s_ttl_s,
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }

    def _jobs(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/jobs"

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise KubernetesError(f"Kubernetes API unreachable: {exc}") from exc

    async def _create(self, manifest: dict[str, Any]) -> None:
        resp = await self._request("POST", self._jobs(), json=manifest)
        if resp.status_code == 409:  # this run's Job exists (a restart mid-run): follow it
            log.info(
                "training Job exists; following it", extra={"job": manifest["metadata"]["name"]}
            )
            return
        if resp.status_code >= 300:
            raise KubernetesError(f"creating Job refused ({resp.status_code}): {resp.text[:500]}")
        log.info(
            "training Job created",
            extra={"job": manifest["metadata"]["name"], "namespace": self.namespace},
        )

    async def status(self, name: str) -> str:
        """``running``, ``complete`` or ``failed: <reason>``."""
        resp = await self._request("GET", f"{self._jobs()}/{name}")
        if resp.status_code == 404:
            return "failed: Job deleted"
        if resp.status_code >= 300:
            raise KubernetesError(f"reading Job refused ({resp.status_code}): {resp.text[:300]}")
        st = resp.json().get("status", {})
        for cond in st.get("conditions") or []:
            if cond.get("status") == "True" and cond.get("type") == "Complete":
                return "complete"
            if cond.get("status") == "True" and cond.get("type") == "Failed":
                return f"failed: {cond.get('reason', '')} {cond.get('message', '')}".strip()
        if st.get("succeeded"):
            return "complete"
        return "running"

    async def _wait(self, name: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s + self.settings.k8s_start_grace_s
        while True:
            state = await self.status(name)
            if state != "running":
                return state
            if time.monotonic() > deadline:
                return "timeout"
            await asyncio.sleep(self.settings.k8s_poll_s)

    async def _delete(self, name: str) -> None:
        await self._request(
            "DELETE", f"{self._jobs()}/{name}", json={"propagationPolicy": "Background"}
        )


def _in_cluster_namespace() -> str | None:
    path = SA_DIR / "namespace"
    return path.read_text().strip() if path.exists() else None
