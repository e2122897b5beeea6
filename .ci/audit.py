"""make audit: the lock file's third-party packages against a vulnerability database.

Runs pip-audit (PyPI's advisory data, or OSV with --osv) on the requirements exported from
uv.lock, with their hashes and without resolving anything. Exit 1 when a locked version has a
known vulnerability. Where the database cannot be reached, or knows none of the locked
versions (a registry mirror), it says so and exits 0: nothing was audited, and it says that too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PIP_AUDIT = "pip-audit==2.9.0"
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--osv", action="store_true", help="query OSV instead of PyPI")
    args = ap.parse_args()
    uv = shutil.which("uv") or "uv"
    with tempfile.TemporaryDirectory() as tmp:
        req, report = Path(tmp) / "requirements.txt", Path(tmp) / "audit.json"
        subprocess.run(
            [uv, "export", "--frozen", "--all-packages", "--all-extras", "--no-emit-workspace",
             "--format", "requirements-txt", "--no-header", "-o", str(req)],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        cmd = [uv, "tool", "run", PIP_AUDIT, "--disable-pip", "--progress-spinner", "off",
               "-r", str(req), "-f", "json", "-o", str(report)]  # fmt: skip
        if args.osv:
            cmd += ["-s", "osv"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if not report.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            print(f"audit: skipped, the vulnerability database did not answer: {tail[0]}")
            return 0
        deps = json.loads(report.read_text())["dependencies"]
    audited = [d for d in deps if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    if not audited:
        reason = deps[0].get("skip_reason", "?") if deps else "no dependencies"
        print(f"audit: skipped, the database knows none of the {len(deps)} locked versions "
              f"(e.g. {reason!r}); nothing was audited")  # fmt: skip
        return 0
    for d in vulnerable:
        for v in d["vulns"]:
            fixed = ", ".join(v.get("fix_versions", [])) or "no fix yet"
            print(f"audit: {d['name']} {d['version']}: {v['id']} (fixed in {fixed})")
    print(f"audit: {len(audited)} of {len(deps)} locked packages audited, "
          f"{len(vulnerable)} with known vulnerabilities")  # fmt: skip
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
