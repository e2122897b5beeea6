"""The images, the charts and the compose file agree: what `make images` tags is what the charts
and compose.yaml run, on the port and user the charts expect. File checks only (no Docker);
`make images` itself builds and starts the images. The images are the targets of one
Dockerfile (deploy/images/Dockerfile): each service's instructions are its target's stage and
the stages it is built `FROM`."""

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
IMAGES = ROOT / "deploy" / "images"
BUILD_SH = IMAGES / "build.sh"
DOCKERFILE = IMAGES / "Dockerfile"


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


def _stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Stage name -> (what it is built FROM, its instructions after the FROM)."""
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, args in _instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            base, _, name = args.partition(" AS ")
            assert name and name not in stages, f"every stage is named, once: FROM {args}"
            current = []
            stages[name] = (base, current)
        elif current is not None:
            current.append((word, args))
    return stages


def _image(svc: str) -> list[tuple[str, str]]:
    """The instructions of the image `--target svc` builds: its stage after those it is FROM."""
    stages = _stages()
    chain: list[list[tuple[str, str]]] = []
    name = svc
    while name in stages:
        base, ins = stages[name]
        chain.insert(0, ins)
        name = base
    assert name == "${BASE_IMAGE}", name
    return [i for ins in chain for i in ins]


def _image_packages(svc: str) -> list[str]:
    """Our packages the image installs: what build.sh passes as PACKAGES (deploy/images/lib.sh)."""
    out = subprocess.run(
        ["bash", "-c", 'source deploy/images/lib.sh && image_packages "$1"', "-", svc],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def test_dockerfile_is_multistage_from_an_argument_base_one_target_per_service() -> None:
    ins = _instructions(DOCKERFILE.read_text())
    froms = [args for word, args in ins if word == "FROM"]
    assert ins[0] == ("ARG", "BASE_IMAGE=flywheel/base:bookworm-py3.11")
    assert froms == [
        "${BASE_IMAGE} AS build",
        "${BASE_IMAGE} AS runtime",
        *(f"runtime AS {svc}" for svc in SERVICES),
    ], froms
    # Dependencies come from the lock, hash-checked; nothing is fetched; ours are PACKAGES.
    build = _stages()["build"][1]
    assert ("ARG", "PACKAGES") in build
    run = " ".join(" ".join(args for word, args in build if word == "RUN").split())
    assert "--require-hashes -r /build/requirements.txt" in run
    assert run.count("--no-index") == 2
    assert "--no-deps ${PACKAGES}" in run and 'test -n "${PACKAGES}"' in run
    # The runtime stage takes the venv from the build stage; the targets only from the context.
    copies = {name: [a for w, a in ins if w == "COPY"] for name, (_, ins) in _stages().items()}
    assert copies["runtime"] == ["--from=build /opt/venv /opt/venv"]
    assert not any("--from" in a for svc in SERVICES for a in copies[svc])
    # build.sh builds each target with its own PACKAGES.
    build_sh = BUILD_SH.read_text()
    assert '-f deploy/images/Dockerfile -t "$tag"' in build_sh
    assert '--target "$svc"' in build_sh
    assert '--build-arg "PACKAGES=$(image_packages "$svc")"' in build_sh


@pytest.mark.parametrize("svc", SERVICES)
def test_image_is_non_root_installs_its_packages_and_runs_its_module(svc: str) -> None:
    ins = _image(svc)
    users = [args for word, args in ins if word == "USER"]
    assert users == ["10001:10001"]
    assert _values(svc)["podSecurityContext"]["runAsUser"] == 10001
    packages = _image_packages(svc)
    assert f"flywheel-{svc}" in packages and "flywheel-shared" in packages, packages
    cmds = [args for word, args in ins if word == "CMD"]
    assert cmds == [f'["python", "-m", "flywheel_{svc}"]'], cmds


@pytest.mark.parametrize("svc", SERVICES)
def test_image_port_and_healthcheck_match_the_chart(svc: str) -> None:
    ins = _image(svc)
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
