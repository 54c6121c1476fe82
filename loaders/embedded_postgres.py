"""The embedded warehouse: a real PostgreSQL server that the project starts in a project-local folder.

pgserver ships the PostgreSQL binaries; we drive them ourselves (initdb / pg_ctl) because we want a TCP
listener on loopback, so that psql and BI tools can connect with an ordinary `postgresql://` URL.
The server listens on 127.0.0.1 only. TCP logins need the superuser's password, generated at
initialisation and kept in a file that only the owner can read, inside the git-ignored state folder;
the Unix socket in the data folder trusts the local owner. Anything shared uses an external server
instead (set WAREHOUSE_URL / OPERATIONAL_URL).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

DEFAULT_PORT = 54329
SUPERUSER = "postgres"
DATABASES = ("operational", "warehouse")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started or reached."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    data_dir: Path
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "superuser.password"

    def url(self, database: str) -> str:
        """The full URL, password included: hand it to clients, never to a log (see config.mask_url)."""
        password = self.password_file.read_text().strip() if self.password_file.exists() else ""
        credentials = f"{SUPERUSER}:{quote(password, safe='')}" if password else SUPERUSER
        return f"postgresql://{credentials}@{self.host}:{self.port}/{database}"

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Initialise (once) and start the server, then make sure both databases exist. Idempotent."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        run_as = _unprivileged_user(self.data_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            try:
                self._initdb(run_as)
            except subprocess.CalledProcessError as exc:
                raise EmbeddedPostgresError(f"initdb failed in {self.pgdata}: {_explain(exc)}") from exc
        if not self.is_running():
            if _port_in_use(self.host, self.port):
                raise EmbeddedPostgresError(
                    f"port {self.port} on {self.host} is taken by another program; "
                    "set WAREHOUSE_PG_PORT to a free port"
                )
            _chown(self.data_dir, run_as)
            # the Unix socket lives in the private data folder; a path longer than the kernel's 107-byte limit
            # (deep test or CI folders) would stop the server, so it then listens on TCP only
            socket_path = f"{self.pgdata}/.s.PGSQL.{self.port}"
            socket_dir = str(self.pgdata) if len(socket_path.encode()) <= 100 else "''"
            options = (
                f"-h {self.host} -p {self.port} -k {socket_dir} "
                "-c max_connections=100 -c shared_buffers=256MB -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_wal_size=4GB"
            )
            try:
                _pg(
                    "pg_ctl",
                    [
                        "-D",
                        str(self.pgdata),
                        "-w",
                        "-t",
                        "60",
                        "-l",
                        str(self.log_file),
                        "-o",
                        options,
                        "start",
                    ],
                    run_as,
                )
            except subprocess.CalledProcessError as exc:
                log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
                raise EmbeddedPostgresError(f"PostgreSQL did not start:\n{_explain(exc)}\n{log}") from exc
        self._wait_ready()
        for database in DATABASES:
            self.ensure_database(database)

    def _initdb(self, run_as: str | None) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        _chown(self.pgdata, run_as)
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        # initdb reads the password from a file; a short-lived copy the server's user may read.
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir, delete=False) as pwfile:
            pwfile.write(password + "\n")
        try:
            _chown(Path(pwfile.name), run_as)
            _pg(
                "initdb",
                [
                    "-D",
                    str(self.pgdata),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    SUPERUSER,
                ],
                run_as,
            )
        finally:
            os.unlink(pwfile.name)

    def stop(self) -> None:
        if self.is_running():
            _pg(
                "pg_ctl",
                ["-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
                _unprivileged_user(self.data_dir),
            )

    def is_running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        try:
            _pg("pg_ctl", ["-D", str(self.pgdata), "status"], _unprivileged_user(self.data_dir))
        except subprocess.CalledProcessError:
            return False
        return True

    def ensure_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.url("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_database where datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'create database "{name}"')
        finally:
            conn.close()

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg2.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(
                        f"PostgreSQL on port {self.port} is not answering: {exc}"
                    ) from exc
                time.sleep(0.2)


def _bin(name: str) -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / name


def _pg(program: str, args: list[str], run_as: str | None) -> str:
    result = subprocess.run(
        [str(_bin(program)), *args],
        capture_output=True,
        text=True,
        check=False,
        user=run_as,
        cwd="/",
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return result.stdout


def _explain(exc: subprocess.CalledProcessError) -> str:
    return (exc.stderr or exc.stdout or "").strip()


def _unprivileged_user(data_dir: Path) -> str | None:
    """PostgreSQL refuses to run as root; as root we run it as pgserver's own unprivileged user."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists("pgserver")
    bin_dir = _bin("postgres").parent
    ensure_prefix_permissions(bin_dir)
    import stat

    read_exec = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_dir, read_exec)
    ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    ensure_prefix_permissions(data_dir)
    data_dir.chmod(data_dir.stat().st_mode | stat.S_IXGRP | stat.S_IXOTH)  # traversable, not listable
    return "pgserver"


def _chown(path: Path, user: str | None) -> None:
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
