"""A real BigQuery API server on loopback for the tests: bqemulator (REST + gRPC, DuckDB underneath).

Why an emulator: the pipeline must be proven on BigQuery in CI without a cloud account. bqemulator speaks the
BigQuery REST API (jobs, load jobs, datasets, tables, MERGE, scripting) well enough for dbt-bigquery and dlt; it
runs in its own venv (.bootstrap/bqemulator, made by .ci/install-bqemulator from tests/bigquery/requirements.txt)
because it needs DuckDB 1.5.x. Every emulator workaround lives here and in tests/bigquery/, never in product code.

API (session fixture `bigquery_emulator` in conftest.py yields a started `BigQueryEmulator`):

    emu.endpoint                 "http://127.0.0.1:<port>"  (REST; BIGQUERY_API_ENDPOINT for dbt)
    emu.grpc_endpoint            "127.0.0.1:<port>"         (Storage Read/Write API)
    emu.project                  the emulated project id ("test-project")
    emu.client()                 google.cloud.bigquery.Client bound to the emulator (anonymous credentials)
    emu.query(sql)               rows as list[tuple]; ALWAYS use fully qualified names
                                 (`project.dataset.table`): the emulator may return an empty result for
                                 unqualified names through jobs.query
    emu.table(dataset, table)    the fully qualified, back-quoted name: `test-project.dataset.table`
    emu.datasets()               dataset ids of the project
    emu.drop_datasets(prefix)    delete every dataset whose id starts with prefix (with its tables)
    emu.dbt_env(schema_prefix)   the variables the CLI, the loaders and profiles.example.yml (target bigquery_ci)
                                 read to work on this emulator
    emu.stop()                   ends the server (the fixture does it at session end)

Outside the fixture: `with BigQueryEmulator(tmp_dir) as emu: ...`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

PROJECT_DIR = Path(__file__).resolve().parents[2]
EMULATOR_VENV = PROJECT_DIR / ".bootstrap" / "bqemulator"
INSTALL_SCRIPT = PROJECT_DIR / ".ci" / "install-bqemulator"
LAUNCHER = PROJECT_DIR / "tests" / "bigquery" / "start_emulator.py"
DEFAULT_PROJECT = "test-project"
# dbt's threads on the emulator, for `dbt` and `warehouse transform --`: its jobs are latency-bound (each
# waits on the client's polling, whatever the load), so run as many at once as it accepts (max_concurrent_jobs
# in tests/bigquery/start_emulator.py). Measured: a full build with tests 445 s with the profile's 4, 259 s with
# 16 while the emulator had CPU to spare; about the same with both cores busy. dbt reads no environment variable
# for threads (DBT_THREADS is not one), hence arguments.
DBT_THREADS_ARGS = ("--threads", "16")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_installed() -> Path:
    """The emulator venv's python; runs the idempotent install script (pinned, hash-checked) if needed."""
    python = EMULATOR_VENV / "bin" / "python"
    result = subprocess.run(
        [str(INSTALL_SCRIPT)], cwd=PROJECT_DIR, capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not python.exists():
        raise RuntimeError(
            f"the BigQuery emulator could not be installed ({INSTALL_SCRIPT} exit {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return python


class BigQueryEmulator:
    """One bqemulator process in a private folder, on free loopback ports, ephemeral (in-memory) storage."""

    def __init__(self, work_dir: Path, project: str = DEFAULT_PROJECT) -> None:
        self.work_dir = Path(work_dir)
        self.project = project
        self.rest_port = _free_port()
        self.grpc_port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.rest_port}"
        self.grpc_endpoint = f"127.0.0.1:{self.grpc_port}"
        self.log_path = self.work_dir / "bqemulator.log"
        # load jobs read gs://bucket/x from gcs_local_root/bucket/x: a filesystem-backed fake-gcs-server rooted
        # here makes dlt's staging="filesystem" loads work offline (test_bigquery_loaders.py)
        self.gcs_local_root = self.work_dir / "gcs"
        self._process: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> BigQueryEmulator:
        python = ensure_installed()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.gcs_local_root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BQEMU_", "GOOGLE_", "BIGQUERY_"))}
        # the emulator's own tmp files (upload staging) stay in the test's folder
        env["TMPDIR"] = str(self.work_dir)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    str(python),
                    str(LAUNCHER),
                    "--rest-port",
                    str(self.rest_port),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--project",
                    self.project,
                    "--gcs-local-root",
                    str(self.gcs_local_root),
                ],
                cwd=self.work_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        url = f"{self.endpoint}/bigquery/v2/projects/{self.project}/datasets"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"bqemulator exited ({self._process.returncode}):\n{self._log_tail()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"bqemulator not ready after {timeout:.0f}s:\n{self._log_tail()}")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=15)
        self._process = None

    def __enter__(self) -> BigQueryEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- access ----------------------------------------------------------------------------------------

    def client(self) -> Any:
        """A google-cloud-bigquery client on the emulator (anonymous credentials: it checks none)."""
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import bigquery

            self._client = bigquery.Client(
                project=self.project,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=self.endpoint),
            )
        return self._client

    def table(self, dataset: str, table: str) -> str:
        return f"`{self.project}.{dataset}.{table}`"

    def query(self, sql: str) -> list[tuple]:
        """Rows of one query as tuples. Name tables fully qualified (see `table`)."""
        return [tuple(row.values()) for row in self.client().query(sql).result()]

    def datasets(self) -> list[str]:
        return sorted(d.dataset_id for d in self.client().list_datasets())

    def drop_datasets(self, prefix: str) -> None:
        for dataset in self.datasets():
            if dataset.startswith(prefix):
                self.client().delete_dataset(dataset, delete_contents=True, not_found_ok=True)

    def dbt_env(self, schema_prefix: str = "ci") -> dict[str, str]:
        """What the CLI, the loaders and profiles.example.yml's bigquery_ci target read to use this emulator."""
        return {
            "WAREHOUSE": "bigquery",
            "DBT_TARGET": "bigquery_ci",
            "DBT_SCHEMA_PREFIX": schema_prefix,
            "BIGQUERY_PROJECT": self.project,
            "BIGQUERY_LOCATION": "US",
            "BIGQUERY_API_ENDPOINT": self.endpoint,
            # the emulator checks no credentials; an opaque token avoids looking for Google credentials
            "BIGQUERY_AUTH_METHOD": "oauth-secrets",
            "BIGQUERY_TOKEN": "emulator",
            # the emulator rejects gzip'd load files (dlt compresses its jsonl state files)
            "DATA_WRITER__DISABLE_COMPRESSION": "true",
        }
