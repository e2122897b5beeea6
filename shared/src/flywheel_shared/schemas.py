"""JSON Schema of every event and of the model spec, generated into the repo."""

from __future__ import annotations

import json
from pathlib import Path

from .events import EVENT_CLASSES
from .spec import ModelSpec
from .topics import TOPICS


def render() -> dict[str, str]:
    """File name → JSON Schema text, for every event class and the model spec."""
    out = {}
    for cls in EVENT_CLASSES:
        spec = TOPICS[cls.topic]
        schema = cls.model_json_schema()
        schema["x-flywheel-topic"] = f"{{prefix}}.{spec.name}.v{spec.version}"
        out[f"{spec.name}.v{spec.version}.json"] = (
            json.dumps(schema, indent=2, sort_keys=True) + "\n"
        )
    out["model-spec.v1.json"] = (
        json.dumps(ModelSpec.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"
    )
    return out


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``, removing stale ones; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = render()
    for old in directory.glob("*.json"):
        if old.name not in files:
            old.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of schema files that are missing, different or extra in ``directory``."""
    files = render()
    problems = [
        n
        for n, t in files.items()
        if not (directory / n).exists() or (directory / n).read_text() != t
    ]
    problems += [p.name for p in directory.glob("*.json") if p.name not in files]
    return sorted(problems)
