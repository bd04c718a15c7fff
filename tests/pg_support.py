"""A PostgreSQL server for the tests and benchmarks: ``RELAIS_TEST_PG_URL``, or a throwaway cluster.

``pg_server_url()`` is meant for session-scoped use (the ``pg_server`` fixture in
tests/conftest.py). In order:

1. ``RELAIS_TEST_PG_URL`` set: that server is used as is (an admin URL: the ``pg_url``
   fixture runs CREATE DATABASE / DROP DATABASE on it);
2. ``initdb`` and ``pg_ctl`` found (``PATH``, then ``/usr/lib/postgresql/*/bin``, newest
   first): a throwaway cluster in a temp dir, on a free TCP port of 127.0.0.1, trust auth,
   ``fsync=on`` (the journal's durability is under test), ``max_connections=250``, logging to
   ``<tmp>/postgres.log``; stopped (``pg_ctl stop -m fast``) and deleted at session end;
3. otherwise the test is skipped, except under ``CI=true``, where a skipped PostgreSQL test
   would hide the PostgreSQL journal, so it fails.

PostgreSQL refuses to run as root: when euid is 0 the cluster's commands run as the
``postgres`` system user (``runuser -u postgres --``), which owns the temp dir.

``start_cluster()`` is usable without pytest (bench/pg_drivers.py uses it).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "RELAIS_TEST_PG_URL"
NO_SERVER = "no PostgreSQL server: set RELAIS_TEST_PG_URL or install postgresql"
PG_USER = "postgres"  # the Debian package's system user, also the cluster's superuser name
MAX_CONNECTIONS = 250


def find_pg_bindir() -> Path | None:
    """The directory holding both ``initdb`` and ``pg_ctl``: PATH first, then Debian's versioned dirs."""
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(initdb).resolve().parent
        if (bindir / "pg_ctl").exists():
            return bindir
    candidates = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        version = bindir.parent.name
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists() and re.fullmatch(r"\d+(\.\d+)?", version):
            candidates.append((tuple(int(p) for p in version.split(".")), bindir))
    if not candidates:
        return None
    return max(candidates)[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_cluster_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root and runuser is missing: cannot start PostgreSQL as 'postgres'")
    return [runuser, "-u", PG_USER, "--", *cmd]


def _run(cmd: list[str], timeout: float = 120) -> None:
    done = subprocess.run(_as_cluster_user(cmd), capture_output=True, text=True, timeout=timeout, cwd="/")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")


@dataclass
class PgCluster:
    """A throwaway cluster: ``url`` is the superuser's URL on the ``postgres`` database."""

    bindir: Path
    directory: Path
    port: int
    running: bool = False

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def logfile(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.running:
            self.running = False
            with contextlib.suppress(Exception):
                _run([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60"])
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(bindir: Path | None = None, *, attempts: int = 3) -> PgCluster:
    """initdb + pg_ctl start a cluster on a free port, wait until it accepts connections.

    Raises RuntimeError (with the server log's tail) when it cannot; LookupError without binaries.
    """
    bindir = bindir or find_pg_bindir()
    if bindir is None:
        raise LookupError(NO_SERVER)
    directory = Path(tempfile.mkdtemp(prefix="relais-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(PG_USER)
        except KeyError:
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"running as root and there is no {PG_USER!r} user to run PostgreSQL as") from None
        os.chown(directory, user.pw_uid, user.pw_gid)
    cluster = PgCluster(bindir, directory, port=0)
    try:
        _run([str(bindir / "initdb"), "-D", str(cluster.datadir), "-U", PG_USER, "--auth=trust",
              "-E", "UTF8", "--locale=C"])
        base_conf = (cluster.datadir / "postgresql.conf").read_text()
        last_error: Exception | None = None
        for _ in range(attempts):  # the free port may be taken between probe and bind: retry on another
            cluster.port = _free_port()
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(cluster.port),
                "unix_socket_directories": f"'{directory}'",
                "max_connections": str(MAX_CONNECTIONS),
                "fsync": "on",
                "synchronous_commit": "on",
                "full_page_writes": "on",
                "logging_collector": "off",
            }
            conf = base_conf + "\n# relais tests\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
            (cluster.datadir / "postgresql.conf").write_text(conf)  # rewriting keeps postgres as owner
            try:
                _run([str(bindir / "pg_ctl"), "start", "-D", str(cluster.datadir), "-l", str(cluster.logfile),
                      "-w", "-t", "60"])
            except RuntimeError as exc:
                last_error = exc
                continue
            cluster.running = True
            _wait_ready(cluster.url, timeout=30)
            return cluster
        raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{cluster.log_tail()}")
    except BaseException:
        cluster.stop()
        raise


def _wait_ready(url: str, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


_cluster: PgCluster | None = None
_url: str | None = None


def _unavailable(reason: str) -> NoReturn:
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def pg_server_url() -> str:
    """The URL of a PostgreSQL server for this session (see the module docstring), or skip / fail."""
    global _cluster, _url
    if _url is not None:
        return _url
    env = os.environ.get(ENV_URL)
    if env:
        _url = env
        return _url
    bindir = find_pg_bindir()
    if bindir is None:
        _unavailable(NO_SERVER)
    _cluster = start_cluster(bindir)
    atexit.register(stop_pg_server)  # if pg_server's teardown never runs
    _url = _cluster.url
    return _url


def stop_pg_server() -> None:
    """Stop and delete the throwaway cluster, if pg_server_url() started one."""
    global _cluster, _url
    if _cluster is not None:
        _cluster.stop()
    _cluster = None
    _url = None


def database_url(server_url: str, dbname: str) -> str:
    """``server_url`` with its database replaced by ``dbname`` (URL or key=value conninfo)."""
    if "://" in server_url:
        parts = urlsplit(server_url)
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    from psycopg.conninfo import make_conninfo

    return make_conninfo(server_url, dbname=dbname)


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "relais_test") -> Iterator[str]:
    """CREATE DATABASE a uniquely named database on ``server_url``, yield its URL, DROP it WITH (FORCE)."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
