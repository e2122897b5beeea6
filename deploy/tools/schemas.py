#!/usr/bin/env python3
"""Convert offline JSON schemas into kubeconform's local layout (stdlib only; run by install.sh).

schemas.py k8s  WHEEL K8S_VERSION OUT_ROOT
    kubernetes-validate's wheel ships kubernetes_validate/kubernetes-json-schema/
    v<ver>-local{,-strict}/<kind>-<group>-<version>.json whose "$id"/"$ref" point at
    https://kubernetes.io/api/...; drop "$id" and make "$ref" relative files, writing
    OUT_ROOT/k8s-v<ver>/ and OUT_ROOT/k8s-v<ver>-strict/.
schemas.py crds OUT_DIR K8S_DEFS_REL PKG_DIR=LABEL...
    @kubernetes-models/* npm packages (versions whose models embed `const schema = {...}`)
    -> OUT_DIR/<group>/<kind lower-case>_<version>.json, ObjectMeta "$ref"s pointing at
    K8S_DEFS_REL (the Kubernetes _definitions.json, relative to OUT_DIR/<group>/).
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _rewrite_refs(node: Any, fix: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$id":
                continue
            if key == "$ref" and isinstance(value, str):
                out[key] = fix(value)
            else:
                out[key] = _rewrite_refs(value, fix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, fix) for v in node]
    return node


def k8s(wheel: str, version: str, out_root: str) -> None:
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local"
    written = 0
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".json")]
        if not names:
            sys.exit(f"schemas.py: no schemas for Kubernetes {version} in {wheel}")
        for name in names:
            flavour, filename = name[len(prefix) :].split("/", 1)  # "" or "-strict"
            if "/" in filename:
                continue
            doc = json.loads(zf.read(name))
            defs = "#" if filename == "_definitions.json" else "_definitions.json#"

            def fix(ref: str, defs: str = defs) -> str:
                return defs + ref.split("#", 1)[1] if ref.startswith("/api/") else ref

            target = Path(out_root) / f"k8s-v{version}{flavour}" / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(_rewrite_refs(doc, fix), separators=(",", ":")))
            written += 1
    out = f"{out_root}/k8s-v{version}{{,-strict}}"
    print(f"schemas.py: {written} Kubernetes {version} schemas -> {out}")


def _nullable(node: Any, meta_ref: str) -> Any:
    """OpenAPI `nullable: true` -> JSON-schema type union; ObjectMeta ref -> local file."""
    if isinstance(node, list):
        return [_nullable(v, meta_ref) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v, meta_ref) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    ref = out.get("$ref")
    if isinstance(ref, str) and not ref.startswith(("#", ".", "/")):
        if ref.rstrip("#") != OBJECT_META:
            sys.exit(f"schemas.py: unexpected $ref {ref!r}")
        out["$ref"] = meta_ref
    return out


SCHEMA_RE = re.compile(r"^const schema = (\{.*?^\});$", re.S | re.M)
API_RE = re.compile(r'\.apiVersion = "([^"]+)";')
KIND_RE = re.compile(r'\.kind = "([^"]+)";')


def crds(out_dir: str, defs_rel: str, packages: list[str]) -> None:
    meta_ref = f"{defs_rel}#/$defs/{OBJECT_META}"
    written = []
    for spec in packages:
        pkg_dir, _, label = spec.partition("=")
        for js in sorted(Path(pkg_dir).glob("*/*/*.js")):
            src = js.read_text()
            m, api, kind = SCHEMA_RE.search(src), API_RE.search(src), KIND_RE.search(src)
            if not (m and api and kind):
                continue  # index.js, helpers
            group, _, version = api[1].rpartition("/")
            schema = _nullable(json.loads(m[1]), meta_ref)
            schema = {"$schema": DRAFT, "x-flywheel-source": label, **schema}
            target = Path(out_dir) / group / f"{kind[1].lower()}_{version}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(schema, indent=1) + "\n")
            written.append(f"{kind[1]}.{group}/{version}")
    if not written:
        sys.exit("schemas.py: no CRD schemas found (did the npm package layout change?)")
    print(f"schemas.py: {len(written)} CRD schemas -> {out_dir}: {', '.join(sorted(written))}")


def main(argv: list[str]) -> None:
    if len(argv) == 4 and argv[0] == "k8s":
        k8s(argv[1], argv[2], argv[3])
    elif len(argv) >= 4 and argv[0] == "crds":
        crds(argv[1], argv[2], argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
