"""A PostgreSQL server for tests.

Order of preference:

1. ``FLYWHEEL_TEST_POSTGRES_URL`` set: that server, used as-is (never stopped).
2. Debian's server binaries present (``/usr/lib/postgresql/*/bin/initdb``, package
   ``postgresql``): a throwaway cluster in a temporary directory, listening on 127.0.0.1 on
   a free port with trust authentication, deleted at the end. As root, the cluster runs as
   the ``postgres`` system user (PostgreSQL refuses to run as root).
3. Otherwise: None, and tests that need PostgreSQL skip with :data:`UNAVAILABLE`.

URLs are SQLAlchemy URLs for psycopg 3: ``postgresql+psycopg://user@host:port/db``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flywheel_devkit.kafka import pick_free_port

__all__ = ["UNAVAILABLE", "PostgresServer", "find_bindir", "postgres_server"]

UNAVAILABLE = (
    "PostgreSQL not available: set FLYWHEEL_TEST_POSTGRES_URL, or install Debian's "
    "'postgresql' package (server binaries in /usr/lib/postgresql/*/bin)"
)
_DATABASE = "flywheel"


class PostgresStartError(RuntimeError):
    """The throwaway cluster could not be created or started."""


def find_bindir() -> Path | None:
    """Directory of the newest installed PostgreSQL server binaries, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A throwaway cluster: ``url`` of its database, ``admin_url`` of ``postgres``."""

    bindir: Path
    root: Path
    port: int
    user: str | None
    """System user the server runs as (None: the current one)."""

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the test database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{_DATABASE}"

    def _run(self, *args: str | Path, timeout: float = 60) -> None:
        cmd = [str(a) for a in args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
        if proc.returncode != 0:
            raise PostgresStartError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log."""
        try:
            text = (self.root / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """initdb, start on 127.0.0.1:port with the socket in the temp dir, create the db."""
        self._run(
            self.bindir / "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                # A test cluster: durability traded for speed.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            self.bindir / "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self._run(
            self.bindir / "createdb",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            _DATABASE,
        )

    def stop(self) -> None:
        """Stop the server at once (its data is thrown away anyway)."""
        try:
            self._run(self.bindir / "pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop")
        except (PostgresStartError, subprocess.TimeoutExpired):
            pass


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresStartError(
            "running as root needs the 'postgres' system user (created by the postgresql "
            "package) to run the test cluster"
        ) from exc
    if shutil.which("runuser") is None:
        raise PostgresStartError("running as root needs 'runuser' (util-linux)")
    return "postgres"


@contextmanager
def postgres_server() -> Iterator[str | None]:
    """Yield a PostgreSQL SQLAlchemy URL for the duration of the block, or None.

    Raises :class:`PostgresStartError` when the binaries exist but the cluster fails to
    start: a broken installation should fail loudly rather than skip tests.
    """
    external = os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "").strip()
    if external:
        yield external
        return
    bindir = find_bindir()
    if bindir is None:
        yield None
        return
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(bindir, root, pick_free_port(), user)

    def close() -> None:
        atexit.unregister(close)
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)

    atexit.register(close)
    try:
        server.start()
        yield server.url
    finally:
        close()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new empty database on the server for one test (dropped afterwards).

    Without CREATE DATABASE rights (an external server), the server's own database is reset
    instead and left in place.
    """
    import uuid

    import sqlalchemy as sa  # the registry's dependency; only tests that use PostgreSQL need it

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.ProgrammingError:
            with admin.connect() as conn:
                conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
            yield server_url
            return
        yield sa.make_url(server_url).set(database=name).render_as_string(False)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
