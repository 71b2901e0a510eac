"""A throwaway PostgreSQL server from the machine's binaries: initdb, random port, fsync off."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from devenv.processes import ManagedProcess, free_port

SUPERUSER = "leoflow"


def find_bindir() -> Path:
    """The folder with initdb and postgres: $LEOFLOW_DEV_PG_BIN, pg_config, or Debian's layout."""
    explicit = os.environ.get("LEOFLOW_DEV_PG_BIN")
    candidates = [explicit] if explicit else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for cand in candidates:
        if cand and (Path(cand) / "initdb").exists() and (Path(cand) / "postgres").exists():
            return Path(cand)
    raise FileNotFoundError(
        "PostgreSQL server binaries (initdb, postgres) not found; install postgresql "
        "or set LEOFLOW_DEV_PG_BIN"
    )


def _run_as(*, die_with_parent: bool = True) -> list[str]:
    """PostgreSQL refuses to run as root: demote to the 'postgres' (or 'nobody') user."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}",
                "--init-groups", *(["--pdeathsig=KILL"] if die_with_parent else []), "--"]
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _owner() -> tuple[int, int] | None:
    prefix = _run_as()
    if not prefix:
        return None
    user = prefix[1].split("=", 1)[1]
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


@dataclass
class Postgres:
    """One PostgreSQL cluster in a fresh folder (outside root-only temp dirs, so it may be demoted)."""

    workdir: Path | None = None
    die_with_parent: bool = True
    port: int = 0
    # Also listen on this address and trust clients from this CIDR (pods of the dev node); loopback always.
    pod_access: tuple[str, str] | None = None
    # PostgreSQL's own defaults for durability (fsync, synchronous_commit, full_page_writes on) instead of the
    # tests' fast settings: for benchmarks of what a commit costs on a real server.
    durable: bool = False
    process: ManagedProcess | None = field(default=None, repr=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def libpq_url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def pod_url(self, database: str = "postgres") -> str:
        """The same database as seen from the dev node's pods."""
        if not self.pod_access:
            raise ValueError("this PostgreSQL was started without pod access")
        return f"postgresql://{SUPERUSER}@{self.pod_access[0]}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; returns its SQLAlchemy URL."""
        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        finally:
            admin.dispose()
        return self.url(name)

    def start(self, *, timeout: float = 60.0) -> None:
        bindir = find_bindir()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="leoflow-pg-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        data, sockets = self.workdir / "data", self.workdir / "sockets"
        sockets.mkdir(exist_ok=True)
        owner = _owner()
        if owner:
            for path in (self.workdir, sockets):
                os.chown(path, *owner)
        prefix = _run_as(die_with_parent=self.die_with_parent)
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        if not (data / "PG_VERSION").exists():
            init = subprocess.run(
                [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER,
                 "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                capture_output=True, text=True, check=False,
            )
            if init.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
            if self.pod_access:
                with open(data / "pg_hba.conf", "a") as hba:
                    hba.write(f"host all all {self.pod_access[1]} trust  # pods of the dev node only\n")
        self.port = self.port or free_port()  # a restart keeps the port (clients reconnect)
        self.process = ManagedProcess("postgres", [
            *prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
            "-k", str(sockets), "-h", ",".join(["127.0.0.1", *(self.pod_access[:1] if self.pod_access else ())]),
            *(() if self.durable else ("-c", "fsync=off", "-c", "synchronous_commit=off",
                                       "-c", "full_page_writes=off")),
            "-c", "max_connections=300", "-c", "shared_buffers=128MB",
        ], logs / "postgres.log", self.die_with_parent)
        self.process.start()
        isready = bindir / "pg_isready"
        self.process.wait_healthy(lambda: subprocess.run(
            [str(isready), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"],
            capture_output=True, check=False).returncode == 0, timeout=timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
