"""docs/architecture.md names real files: every path it mentions exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SERVICE = re.compile(r"\*\*(\w+)\*\*: `(services/\w+/src/flywheel_\w+/)`")
PACKAGE = re.compile(r"services/\w+/src/flywheel_\w+/")


def mentioned(text: str) -> list[Path]:
    """Backticked paths: from the repo root, or relative to the service paragraph's package."""
    found: list[Path] = []
    base: str | None = None
    for paragraph in text.split("\n\n"):
        header = SERVICE.search(paragraph)
        if paragraph.startswith("#"):
            base = None
        if header:
            base = header.group(2)
        for name in re.findall(r"`([\w./-]+(?:\.py|\.md|\.yaml|/))`", paragraph):
            if name.startswith(("services/", "shared/", "examples/", "deploy/", "docs/")):
                found.append(ROOT / name)
                package = PACKAGE.match(name)
                if package and not paragraph.startswith("#"):
                    base = package.group(0)  # later relative names: in this package
            elif base is not None and ("/" in name or name.endswith(".py")):
                found.append(ROOT / base / name)
            elif name.endswith(".py"):
                found.append(ROOT / "shared/src/flywheel_shared" / name)
    return found


def test_every_file_the_map_names_exists() -> None:
    paths = mentioned(DOC.read_text())
    assert len(paths) > 40, "the map names the files a newcomer needs"
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_each_service_has_its_paragraph() -> None:
    services = {m.group(1) for m in SERVICE.finditer(DOC.read_text())}
    assert services == {p.name for p in (ROOT / "services").iterdir() if p.is_dir()}
