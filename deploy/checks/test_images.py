"""The images, the charts and the compose file agree: what `make images` tags is what the charts
and compose.yaml run, on the port and user the charts expect. File checks only (no Docker);
`make images` itself builds and starts the images."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["ingest", "registry", "trainer", "serving", "monitor"]
BUILD_SH = ROOT / "deploy" / "images" / "build.sh"


def _dockerfile(svc: str) -> str:
    return (ROOT / "services" / svc / "Dockerfile").read_text()


def _chart_file(svc: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "helm" / f"flywheel-{svc}" / name).read_text())


def _values(svc: str) -> dict[str, Any]:
    return _chart_file(svc, "values.yaml")


def _chart(svc: str) -> dict[str, Any]:
    return _chart_file(svc, "Chart.yaml")


def _version(svc: str) -> str:
    data = tomllib.loads((ROOT / "services" / svc / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_is_multistage_non_root_from_an_argument_base(svc: str) -> None:
    ins = _instructions(_dockerfile(svc))
    froms = [args for word, args in ins if word == "FROM"]
    assert ins[0] == ("ARG", "BASE_IMAGE=flywheel/base:bookworm-py3.11")
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"], froms
    users = [args for word, args in ins if word == "USER"]
    assert users == ["10001:10001"]
    assert _values(svc)["podSecurityContext"]["runAsUser"] == 10001
    # Dependencies come from the lock, hash-checked; nothing is fetched.
    run = " ".join(args for word, args in ins if word == "RUN")
    assert "--require-hashes -r /build/requirements.txt" in run
    assert run.count("--no-index") == 2
    assert f"flywheel-{svc}" in run and "flywheel-shared" in run
    assert ("CMD", f'["python", "-m", "flywheel_{svc}"]') in ins


@pytest.mark.parametrize("svc", SERVICES)
def test_image_port_and_healthcheck_match_the_chart(svc: str) -> None:
    ins = _instructions(_dockerfile(svc))
    port = _values(svc)["containerPort"]
    assert ("EXPOSE", str(port)) in ins
    health = [args for word, args in ins if word == "HEALTHCHECK"]
    assert len(health) == 1
    env = f"FLYWHEEL_{svc.upper()}_PORT"
    assert f"os.environ.get('{env}', '{port}')" in health[0] and "/healthz" in health[0]
    envs = " ".join(args for word, args in ins if word == "ENV")
    assert f"{env}={port}" in envs


@pytest.mark.parametrize("svc", SERVICES)
def test_chart_default_image_is_what_make_images_tags(svc: str) -> None:
    image = _values(svc)["image"]
    assert image["repository"] == f"flywheel/{svc}"
    assert image["tag"] == ""  # the chart's appVersion
    assert _chart(svc)["appVersion"] == _version(svc)
    assert "tag=flywheel/$svc:$version" in BUILD_SH.read_text()


def test_compose_runs_the_built_images_on_their_ports() -> None:
    services = _compose()["services"]
    for svc in SERVICES:
        spec = services[svc]
        assert spec["image"] == f"flywheel/{svc}:{_version(svc)}"
        assert spec["pull_policy"] == "never"
        assert spec["read_only"] is True
        port = _values(svc)["containerPort"]
        assert any(str(p).endswith(f":{port}") for p in spec.get("ports", [])), spec.get("ports")
    # Every image that compose does not build is pinned to a version, not `latest`.
    for name, spec in services.items():
        image = spec["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)


def test_prometheus_example_scrapes_the_images_ports() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.example.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    for svc in SERVICES:
        assert targets[f"flywheel-{svc}"] == [f"{svc}:{_values(svc)['containerPort']}"]


def test_build_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(BUILD_SH)], check=True)
