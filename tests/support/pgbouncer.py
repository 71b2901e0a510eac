"""A throwaway PgBouncer in front of the test PostgreSQL, in transaction pooling mode."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devenv.postgres import SUPERUSER, Postgres, _run_as
from devenv.processes import ManagedProcess, free_port


def find_pgbouncer() -> str:
    explicit = os.environ.get("LEOFLOW_DEV_PGBOUNCER")
    found = explicit or shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer")
                                                      else None)
    if not found:
        raise FileNotFoundError("pgbouncer not found (make postgres installs it); or set LEOFLOW_DEV_PGBOUNCER")
    return found


@dataclass
class PgBouncer:
    """``pool_size`` server connections per (database, user), handed out per transaction."""

    postgres: Postgres
    pool_size: int = 2
    port: int = 0
    workdir: Path | None = None
    process: ManagedProcess | None = field(default=None, repr=False)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        binary = find_pgbouncer()
        self.workdir = Path(tempfile.mkdtemp(prefix="leoflow-pgbouncer-"))
        self.port = free_port()
        prefix = _run_as()  # PgBouncer refuses to run as root
        (self.workdir / "users.txt").write_text(f'"{SUPERUSER}" ""\n')
        (self.workdir / "pgbouncer.ini").write_text(f"""\
[databases]
* = host=127.0.0.1 port={self.postgres.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.workdir}/users.txt
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 200
ignore_startup_parameters = options,extra_float_digits
server_reset_query =
logfile = {self.workdir}/pgbouncer.log
""")
        if prefix:
            user = prefix[1].split("=", 1)[1]
            shutil.chown(self.workdir, user=user)
            for name in ("users.txt", "pgbouncer.ini"):
                shutil.chown(self.workdir / name, user=user)
        self.process = ManagedProcess("pgbouncer", [*prefix, binary, str(self.workdir / "pgbouncer.ini")],
                                      self.workdir / "stdout.log")
        self.process.start()

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        self.process.wait_healthy(listening, timeout=20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
