"""The broker's jars: resolved from Maven Central with ``mvn`` using ``deploy/kafka/pom.xml``
into a cache shared by every data directory, and the ``java`` that runs them."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


KAFKA_VERSION = "4.1.1"
_MARKER = ".flywheel-complete"
_LOG_PREFIX = "devkafka:"


class KafkaStartError(RuntimeError):
    """The broker (or the jar resolution) failed; the message carries the log tail."""


def _say(msg: str) -> None:
    print(f"{_LOG_PREFIX} {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- paths


def default_cache_dir() -> Path:
    """Jar cache: ``$FLYWHEEL_KAFKA_CACHE`` or ``~/.cache/flywheel/kafka``."""
    env = os.environ.get("FLYWHEEL_KAFKA_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "flywheel" / "kafka"


def default_data_dir() -> Path:
    """Default broker data directory: ``.flywheel/kafka`` under the current directory."""
    return (Path.cwd() / ".flywheel" / "kafka").resolve()


def find_pom() -> Path:
    """Locate ``deploy/kafka/pom.xml`` (``$FLYWHEEL_KAFKA_POM`` overrides).

    The module lives at ``deploy/devkit/src/flywheel_devkit/kafka/`` in the repo (the
    workspace installs it editable), so the pom is found relative to this file; the
    current directory and its parents are searched as a fallback.
    """
    env = os.environ.get("FLYWHEEL_KAFKA_POM")
    if env:
        pom = Path(env).expanduser().resolve()
        if not pom.is_file():
            raise KafkaStartError(f"FLYWHEEL_KAFKA_POM={env} does not exist")
        return pom
    here = Path(__file__).resolve()
    cwd = Path.cwd().resolve()
    for base in (*here.parents, cwd, *cwd.parents):
        pom = base / "deploy" / "kafka" / "pom.xml"
        if pom.is_file():
            return pom
    raise KafkaStartError(
        "cannot find deploy/kafka/pom.xml; run from the Flywheel repo or set FLYWHEEL_KAFKA_POM"
    )


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaStartError("`java` not found: Kafka 4.1 needs a Java 17+ runtime on PATH")
    return java


# ---------------------------------------------------------------------- jar resolve


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so parallel test workers resolve the jars only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _pom_hash(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:16]


def _libs_complete(libs: Path, digest: str) -> bool:
    marker = libs / _MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def resolve_jars(cache_dir: Path | None = None, *, pom: Path | None = None) -> Path:
    """Return ``<cache_dir>/libs`` holding the broker's runtime jars, fetching them if needed.

    Runs ``mvn dependency:copy-dependencies`` once; the directory is then marked with
    the pom's hash and reused until the pom changes. Safe to call from concurrent
    processes (file lock + atomic rename).
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    pom = (pom or find_pom()).resolve()
    digest = _pom_hash(pom)
    libs = cache_dir / "libs"
    if _libs_complete(libs, digest):
        return libs

    with _file_lock(cache_dir / ".resolve.lock"):
        if _libs_complete(libs, digest):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaStartError(
                "`mvn` not found: Apache Maven is needed once to fetch the Kafka jars"
            )
        _say(f"resolving Kafka {KAFKA_VERSION} from Maven Central… (first run only)")
        started = time.monotonic()
        tmp = cache_dir / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            output = (proc.stdout + proc.stderr).strip().splitlines()[-40:]
            raise KafkaStartError(
                f"maven failed ({proc.returncode}): {shlex.join(cmd)}\n" + "\n".join(output)
            )
        jars = sorted(tmp.glob("*.jar"))
        if not any(j.name.startswith(f"kafka_2.13-{KAFKA_VERSION}") for j in jars):
            shutil.rmtree(tmp, ignore_errors=True)
            raise KafkaStartError(f"maven succeeded but {tmp} has no kafka_2.13 jar")
        (tmp / _MARKER).write_text(digest + "\n")
        # Swap in the new directory; stale jars of another version on the classpath
        # would break the broker, so the old one is removed, not merged.
        old = cache_dir / f"libs.old-{os.getpid()}"
        if libs.exists():
            libs.rename(old)
        tmp.rename(libs)
        shutil.rmtree(old, ignore_errors=True)
        for stale in cache_dir.glob("*.jsa"):
            stale.unlink(missing_ok=True)
        _say(f"resolved {len(jars)} jars in {time.monotonic() - started:.1f}s into {libs}")
    return libs
