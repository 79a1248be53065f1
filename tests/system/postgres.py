"""A private PostgreSQL cluster on loopback for the two-triggerer scenario (Debian's ``postgresql`` package).

The cluster lives in a temporary directory, listens on 127.0.0.1 on a free port, trusts local connections and
skips durability (``fsync=off``): it is scratch data. PostgreSQL refuses to run as root, so under root the server
runs as the ``postgres`` system user (``runuser``), which the Debian package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.system.harness import free_port


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed or cannot start here; the scenario skips with this reason."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest Debian version first)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for path in candidates:
        if Path(path, "initdb").exists() and Path(path, "pg_ctl").exists():
            return Path(path)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (apt-get install postgresql; .ci/run does this when run as root)"
    )


@dataclass
class PostgresCluster:
    bindir: Path
    root: Path
    port: int
    run_as: str | None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root)

    @classmethod
    def start(cls) -> PostgresCluster:
        bindir = find_bindir()
        run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server") from exc
            if not shutil.which("runuser"):
                raise PostgresUnavailable("running as root and 'runuser' is missing")
            run_as = "postgres"
        root = Path(tempfile.mkdtemp(prefix="systest-pg-"))
        if run_as:
            entry = pwd.getpwnam(run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = cls(bindir=bindir, root=root, port=free_port(), run_as=run_as)
        init = cluster._run(
            str(bindir / "initdb"), "-D", str(cluster.datadir), "-U", "airflow", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-800:]}")
        options = (
            f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB"
        )
        started = cluster._run(
            str(bindir / "pg_ctl"), "-D", str(cluster.datadir), "-o", options, "-l", str(root / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if started.returncode != 0:
            log = (root / "server.log").read_text(errors="replace")[-1500:] if (root / "server.log").exists() else ""
            cluster.stop()
            raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-800:]} {log}")
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=cluster.port, user="airflow", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE airflow")
        finally:
            conn.close()
        return cluster

    def stop(self) -> None:
        """Immediate shutdown (scratch data), then remove the directory."""
        if self.datadir.exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "server.log"
        if not path.exists():
            return "(no server log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
