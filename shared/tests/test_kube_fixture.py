"""The real-API-server fixture: etcd + kube-apiserver, driven through the REST API with httpx.

Needs ``deploy/tools/install.sh`` to have run (etcd, kube-apiserver); fails, not skips,
without them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from flywheel_devkit.testing.kube import KubeAPI, KubeToolsMissing, start_kube

pytestmark = [pytest.mark.integration, pytest.mark.kube]

NS = "flywheel-train"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPI]:
    with start_kube(tmp_path_factory.mktemp("kube")) as api:
        yield api


def _job(name: str) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "trainer"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "train", "image": "flywheel/trainer:dev"}],
                }
            },
        },
    }


def _finished(succeeded: bool) -> dict[str, object]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"status": "True", "lastProbeTime": now, "lastTransitionTime": now}
    types = ["SuccessCriteriaMet", "Complete"] if succeeded else ["FailureTarget", "Failed"]
    status: dict[str, object] = {
        "startTime": now,
        "active": 0,
        "ready": 0,
        "terminating": 0,
        "conditions": [{**cond, "type": t, "reason": t} for t in types],
    }
    if succeeded:
        status.update(completionTime=now, succeeded=1)
    else:
        status.update(failed=1)
    return status


def test_server_identity_and_kubeconfig(kube: KubeAPI) -> None:
    with kube.client() as client:
        version = client.get("/version").json()
        assert version["gitVersion"] == "v1.36.3"
        assert (version["major"], version["minor"]) == ("1", "36")
        # RBAC is on and its bootstrap roles exist.
        client.get(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin"
        ).raise_for_status()
    # No token, no access.
    assert httpx.get(f"{kube.url}/api/v1/namespaces", verify=kube.ssl_context()).status_code == 401
    text = kube.kubeconfig.read_text()
    assert kube.url in text and kube.token in text and str(kube.ca_file) in text


def test_job_lifecycle_through_status_subresource(kube: KubeAPI) -> None:
    kube.create_namespace(NS)
    kube.create_namespace(NS)  # idempotent
    with kube.client() as client:
        created = client.post(JOBS, json=_job("train-1"))
        assert created.status_code == 201, created.text
        uid = created.json()["metadata"]["uid"]

        job = client.get(f"{JOBS}/train-1").json()
        assert job["metadata"]["uid"] == uid
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "flywheel/trainer:dev"
        assert not job.get("status", {}).get("conditions")  # no controller: nothing happens

        # What the Job controller would write on success. 1.36 validates it: Complete=True
        # needs SuccessCriteriaMet=True before it, plus startTime and completionTime (422
        # otherwise); Failed=True likewise needs FailureTarget=True and startTime.
        status = {"status": _finished(succeeded=True)}
        patched = client.patch(
            f"{JOBS}/train-1/status",
            content=json.dumps(status),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text

        job = client.get(f"{JOBS}/train-1").json()
        conditions = {c["type"]: c["status"] for c in job["status"]["conditions"]}
        assert conditions["Complete"] == "True"
        assert job["status"]["succeeded"] == 1

        # The main resource endpoint ignores status; the status subresource ignores spec.
        spec_only = client.patch(
            f"{JOBS}/train-1",
            content=b'{"metadata": {"labels": {"seen": "yes"}}, "status": {"succeeded": 7}}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert spec_only.status_code == 200, spec_only.text
        assert spec_only.json()["status"]["succeeded"] == 1
        assert spec_only.json()["metadata"]["labels"]["seen"] == "yes"

        # A failed run, and the 422 for a status the controller could never write.
        client.post(JOBS, json=_job("train-2")).raise_for_status()
        merge = {"Content-Type": "application/merge-patch+json"}
        bad = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
        resp = client.patch(f"{JOBS}/train-2/status", content=json.dumps(bad), headers=merge)
        assert resp.status_code == 422, resp.text
        failed = {"status": _finished(succeeded=False)}
        resp = client.patch(f"{JOBS}/train-2/status", content=json.dumps(failed), headers=merge)
        assert resp.status_code == 200, resp.text
        assert {c["type"] for c in resp.json()["status"]["conditions"]} == {
            "FailureTarget",
            "Failed",
        }

        listed = client.get(JOBS, params={"labelSelector": "app.kubernetes.io/name=trainer"})
        assert sorted(j["metadata"]["name"] for j in listed.json()["items"]) == [
            "train-1",
            "train-2",
        ]


def test_unknown_namespace_is_rejected(kube: KubeAPI) -> None:
    with kube.client() as client:
        resp = client.post("/apis/batch/v1/namespaces/nope/jobs", json=_job("x"))
        assert resp.status_code == 404, resp.text


def test_stop_removes_data_and_missing_tools_fail_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = start_kube(tmp_path, ready_timeout=120)
    root = api.root
    assert (root / "etcd").is_dir()
    api.stop()
    api.stop()  # idempotent
    assert not root.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{api.url}/readyz", verify=False, timeout=2)

    monkeypatch.setenv("FLYWHEEL_TOOLS", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KubeToolsMissing, match=r"deploy/tools/install\.sh"):
        start_kube(tmp_path)
