"""The umbrella chart installed and upgraded into a real kube-apiserver (etcd + apiserver).

No scheduler or kubelet runs, so pods never start: this checks that the API server accepts every
object the chart renders (admission, RBAC, schemas of the running version) and that an upgrade
applies. Hooks are skipped (``--no-hooks``): the topic-creation Job could never complete here.
Run by ``make deploy-check``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from flywheel_devkit.testing.kube import KubeAPI

ROOT = Path(__file__).resolve().parents[2]
HELM = (
    Path(os.environ.get("FLYWHEEL_TOOLS", Path.home() / ".cache" / "flywheel-tools"))
    / "bin"
    / "helm"
)
CHART = ROOT / "deploy" / "helm" / "flywheel"
pytestmark = [pytest.mark.integration, pytest.mark.kube]


@pytest.fixture(scope="module")
def kube(kube_api: KubeAPI) -> KubeAPI:
    return kube_api


def helm(kube: KubeAPI, *args: str) -> str:
    assert HELM.exists(), f"{HELM} missing: run deploy/tools/install.sh"
    out = subprocess.run(
        [str(HELM), *args, "--kubeconfig", str(kube.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        env=kube.env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def get(kube: KubeAPI, path: str) -> httpx.Response:
    with httpx.Client(
        base_url=kube.url, headers={"authorization": f"Bearer {kube.token}"}, verify=False
    ) as c:
        return c.get(path)


def test_the_umbrella_chart_installs_and_upgrades(kube: KubeAPI) -> None:
    helm(kube, "dependency", "update", str(CHART))
    ns = "flywheel"
    helm(kube, "install", "flywheel", str(CHART), "-n", ns, "--create-namespace", "--no-hooks")
    for path in (
        f"/apis/apps/v1/namespaces/{ns}/deployments/flywheel-ingest",
        f"/apis/apps/v1/namespaces/{ns}/deployments/flywheel-registry",
        f"/apis/apps/v1/namespaces/{ns}/deployments/flywheel-trainer",
        f"/apis/apps/v1/namespaces/{ns}/deployments/flywheel-serving",
        f"/apis/apps/v1/namespaces/{ns}/statefulsets/flywheel-monitor",
        f"/api/v1/namespaces/{ns}/services/flywheel-registry",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/flywheel-trainer",
    ):
        resp = get(kube, path)
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:300]}"
    serving = get(kube, f"/apis/apps/v1/namespaces/{ns}/deployments/flywheel-serving").json()
    [c] = serving["spec"]["template"]["spec"]["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"

    helm(
        kube,
        "upgrade",
        "flywheel",
        str(CHART),
        "-n",
        ns,
        "--no-hooks",
        "--set",
        "ingest.replicaCount=3",
    )
    ingest = get(kube, f"/apis/apps/v1/namespaces/{ns}/deployments/flywheel-ingest").json()
    assert ingest["spec"]["replicas"] == 3
    assert "deployed" in helm(kube, "status", "flywheel", "-n", ns)
