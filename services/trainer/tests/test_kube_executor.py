"""Training runs as Kubernetes Jobs, against a real kube-apiserver (etcd + apiserver, no kubelet).

No pod ever runs here, so the test plays the pod's part: it writes the worker's result to the
artifact store and marks the Job complete (or failed) through the API's status subresource.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel_devkit.testing.kube import KubeAPI
from flywheel_shared.spec import load_spec
from flywheel_shared.storage import ObjectStore
from flywheel_trainer.kube import KubernetesExecutor, job_name
from flywheel_trainer.settings import TrainerSettings
from flywheel_trainer.worker import TrainJob, TrainResult

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
pytestmark = [pytest.mark.integration, pytest.mark.kube]


@pytest.fixture(scope="module")
def kube(kube_api: KubeAPI) -> KubeAPI:
    return kube_api


def settings(kube: KubeAPI, **over: Any) -> TrainerSettings:
    base: dict[str, Any] = {
        "executor": "kubernetes",
        "k8s_api_url": kube.url,
        "k8s_token": kube.token,
        "k8s_verify": False,
        "k8s_namespace": "default",
        "k8s_image": "registry.example/flywheel/trainer:0.1.0",
        "k8s_service_account": "flywheel-trainer-runs",
        "k8s_resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "k8s_node_selector": {"flywheel.dev/pool": "training"},
        "k8s_tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "k8s_env_from_secrets": ["flywheel-registry-token"],
        "k8s_image_pull_secrets": ["registry-example-pull"],
        "k8s_poll_s": 0.1,
        "k8s_start_grace_s": 0,
    }
    return TrainerSettings(**{**base, **over})


def job(store: Path, run_id: str) -> TrainJob:
    return TrainJob(
        model="fraud",
        spec=SPEC,
        run_id=run_id,
        correlation_id="c-1",
        storage_uri=str(store),
        registry_url="http://flywheel-registry:8100",
        registry_token="secret-token",
    )


@pytest.fixture
async def api(kube: KubeAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=kube.url, headers={"authorization": f"Bearer {kube.token}"}, verify=False
    ) as client:
        yield client


async def get_job(api: httpx.AsyncClient, name: str, timeout: float = 20) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await api.get(f"/apis/batch/v1/namespaces/default/jobs/{name}")
        if resp.status_code == 200:
            return dict(resp.json())
        assert asyncio.get_running_loop().time() < deadline, f"Job {name} never appeared"
        await asyncio.sleep(0.1)


async def finish(api: httpx.AsyncClient, name: str, kind: str, reason: str) -> None:
    """Play the Job controller: set the terminal condition through the status subresource."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"status": "True", "reason": reason, "message": reason, "lastTransitionTime": now}
    conditions = [{**cond, "type": "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"}]
    conditions.append({**cond, "type": kind})
    status: dict[str, Any] = {"startTime": now, "conditions": conditions}
    if kind == "Complete":
        status.update(succeeded=1, completionTime=now)
    else:
        status.update(failed=1)
    resp = await api.patch(
        f"/apis/batch/v1/namespaces/default/jobs/{name}/status",
        json={"status": status},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert resp.status_code == 200, resp.text


async def test_a_run_becomes_a_job_and_its_result_is_picked_up(
    kube: KubeAPI, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    store = ObjectStore(str(tmp_path))
    ex = KubernetesExecutor(settings(kube), store)
    try:
        run = asyncio.create_task(ex.run(job(tmp_path, "run-ok"), timeout_s=120))
        name = job_name("run-ok")
        spec = (await get_job(api, name))["spec"]
        pod = spec["template"]["spec"]
        [c] = pod["containers"]
        assert c["image"] == "registry.example/flywheel/trainer:0.1.0"
        prefix = "trainer/jobs/run-ok"
        assert c["command"] == ["python", "-m", "flywheel_trainer.worker", "--from-store", prefix]
        assert {"name": "FLYWHEEL_STORAGE_URI", "value": str(tmp_path)} in c["env"]
        assert c["envFrom"] == [{"secretRef": {"name": "flywheel-registry-token"}}]
        assert c["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["serviceAccountName"] == "flywheel-trainer-runs"
        assert pod["imagePullSecrets"] == [{"name": "registry-example-pull"}]
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert pod["nodeSelector"] == {"flywheel.dev/pool": "training"}
        assert pod["tolerations"][0]["key"] == "gpu" and pod["restartPolicy"] == "Never"
        assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 120
        # The job went to the store for the pod, without the registry token.
        stored = TrainJob.model_validate_json(store.get(f"{prefix}/job.json"))
        assert stored.run_id == "run-ok" and stored.registry_token is None
        assert not run.done()  # still running: nothing finished the Job yet

        # The pod's part: the worker writes its result, the Job completes.
        result = TrainResult(status="registered", version=7, passed=True, metrics={"roc_auc": 0.9})
        store.put(f"{prefix}/result.json", result.model_dump_json().encode())
        await finish(api, name, "Complete", "CompletionsReached")
        got = await asyncio.wait_for(run, 20)
        assert got.status == "registered" and got.version == 7 and got.metrics == {"roc_auc": 0.9}

        # The same run again (the trainer restarted mid-run): the existing Job is followed.
        again = await asyncio.wait_for(ex.run(job(tmp_path, "run-ok"), timeout_s=120), 20)
        assert again.version == 7
        listed = await api.get(
            "/apis/batch/v1/namespaces/default/jobs",
            params={"labelSelector": "app.kubernetes.io/name=flywheel-trainer-run"},
        )
        names = [j["metadata"]["name"] for j in listed.json()["items"]]
        assert names.count(name) == 1
    finally:
        await ex.close()


async def test_a_failed_job_and_a_job_past_its_deadline_are_reported(
    kube: KubeAPI, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    store = ObjectStore(str(tmp_path))
    ex = KubernetesExecutor(settings(kube), store)
    try:
        run = asyncio.create_task(ex.run(job(tmp_path, "run-bad"), timeout_s=120))
        name = job_name("run-bad")
        await get_job(api, name)
        await finish(api, name, "Failed", "BackoffLimitExceeded")
        got = await asyncio.wait_for(run, 20)
        assert got.status == "failed" and "BackoffLimitExceeded" in (got.error or "")

        late = await asyncio.wait_for(ex.run(job(tmp_path, "run-slow"), timeout_s=1), 20)
        assert late.status == "failed" and late.error == "recipe timed out after 1 s"
        gone = await api.get(f"/apis/batch/v1/namespaces/default/jobs/{job_name('run-slow')}")
        assert gone.status_code == 404  # deleted, so it cannot register a version later
    finally:
        await ex.close()


async def test_an_unreachable_api_server_asks_for_a_retry(tmp_path: Path) -> None:
    s = TrainerSettings(
        executor="kubernetes", k8s_api_url="https://127.0.0.1:9", k8s_image="x", k8s_verify=False
    )
    ex = KubernetesExecutor(s, ObjectStore(str(tmp_path)))
    try:
        got = await ex.run(job(tmp_path, "run-x"), timeout_s=5)
    finally:
        await ex.close()
    assert got.status == "failed" and got.retryable and "unreachable" in (got.error or "")
