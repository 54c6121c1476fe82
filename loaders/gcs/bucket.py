"""The one small interface the loader uses to talk to a bucket: Google Cloud Storage or a local folder.

Everything the loader does to files goes through `Bucket`: list, stream-read, write, move, and the three
compare-and-swap operations the leases are built on. Keys are object names relative to the bucket root
(`datalake/payload_data/pending/<type>/...`), never URLs, so the loader is the same for both backends.

- `gs://bucket[/prefix]` -> `GCSBucket` (google-cloud-storage). Reads are pinned to the generation that was
  listed, so a file overwritten while it is being read is never mixed; moves copy that generation and delete
  the source only if it is still that generation (`if_generation_match`), so a corrected upload that
  arrives during a run stays in pending/ for the next run. Leases are objects created with
  `if_generation_match=0` and renewed / taken over with `if_generation_match=<generation>`.
- a folder (`/path`, `file:///path`) -> `LocalBucket`, for the embedded demo and tests: the same layout on
  disk; leases are files created with O_EXCL, and their renewal / takeover is serialised by an flock on a
  guard file (released by the kernel if the process dies).

The "generation" of a local file is its mtime in nanoseconds; its token for compare-and-swap is its
content's digest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlsplit

DEFAULT_TIMEOUT_SECONDS = 30.0
RETRY_DEADLINE_ENV = "GCS_RETRY_DEADLINE_SECONDS"
DEFAULT_RETRY_DEADLINE_SECONDS = 60.0


class BucketError(RuntimeError):
    """The bucket cannot be used; the message says which bucket and why (never a credential)."""


class BucketUnreachableError(BucketError):
    """The bucket does not answer, does not exist, or refuses access."""


class PreconditionFailed(BucketError):
    """A compare-and-swap lost: somebody else created / changed / removed the object first."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    generation: int
    updated: dt.datetime | None = None


class Bucket(Protocol):
    url: str

    def check(self) -> None:
        """Raise BucketUnreachableError unless the bucket can be listed."""

    def object_url(self, key: str) -> str: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under `prefix` (a folder, ends with /), recursively, in name order."""

    def stat(self, key: str) -> ObjectInfo | None: ...

    def open(self, info: ObjectInfo) -> IO[bytes]:
        """A binary stream of exactly that generation of the object."""

    def write(self, key: str, data: bytes) -> ObjectInfo: ...

    def move(self, info: ObjectInfo, new_key: str) -> None:
        """Move that generation of the object to new_key (overwriting it). If the source changed meanwhile,
        the copy is made but the newer source stays in place."""

    def create_exclusive(self, key: str, data: bytes) -> str:
        """Create the object only if absent; returns its CAS token; PreconditionFailed if it exists."""

    def read_with_token(self, key: str) -> tuple[bytes, str] | None: ...

    def replace_if(self, key: str, data: bytes, token: str) -> str:
        """Overwrite only if the object still has `token`; returns the new token, else PreconditionFailed."""

    def delete_if(self, key: str, token: str) -> None:
        """Delete only if the object still has `token` (missing is fine)."""


def open_bucket(url: str) -> Bucket:
    """`gs://bucket[/prefix]`, `file:///path` or a plain path."""
    parts = urlsplit(url)
    if parts.scheme == "gs":
        if not parts.netloc:
            raise BucketError(f"bucket URL {url!r} has no bucket name (expected gs://bucket[/prefix])")
        return GCSBucket(parts.netloc, parts.path.strip("/"))
    if parts.scheme == "file":
        return LocalBucket(Path(unquote(parts.path)))
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        return LocalBucket(Path(url))
    raise BucketError(f"unsupported bucket URL {url!r}: use gs://bucket, file:///path or a folder path")


# -- local folder ------------------------------------------------------------------------------


class LocalBucket:
    """A folder laid out like the bucket."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.url = self.root.as_uri()

    def check(self) -> None:
        if not self.root.is_dir():
            raise BucketUnreachableError(f"bucket folder {self.root} does not exist (or is not a folder)")
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise BucketUnreachableError(f"bucket folder {self.root} is not readable and writable")

    def object_url(self, key: str) -> str:
        return f"file://{self.root}/{key}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise BucketError(f"object name {key!r} escapes the bucket folder")
        return path

    def _info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(
            key=key,
            size=st.st_size,
            generation=st.st_mtime_ns,
            updated=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        found = []
        for dirpath, _dirnames, filenames in os.walk(base):
            for filename in filenames:
                if filename.startswith(".tmp-"):
                    continue
                path = Path(dirpath) / filename
                found.append(path.relative_to(self.root).as_posix())
        for key in sorted(found):
            with contextlib.suppress(FileNotFoundError):
                yield self._info(key, self._path(key))

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            return self._info(key, path) if path.is_file() else None
        except FileNotFoundError:
            return None

    def open(self, info: ObjectInfo) -> IO[bytes]:
        try:
            return self._path(info.key).open("rb")
        except FileNotFoundError:
            raise BucketError(f"{self.object_url(info.key)} disappeared before it could be read") from None

    def write(self, key: str, data: bytes) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see a half-written file
        return self._info(key, path)

    def move(self, info: ObjectInfo, new_key: str) -> None:
        source, target = self._path(info.key), self._path(new_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
        except FileNotFoundError:
            raise BucketError(f"{self.object_url(info.key)} disappeared before it could be moved") from None
        self._prune(source.parent)

    def _prune(self, folder: Path) -> None:
        """Leave no empty sub-folders behind (harmless if another file arrives meanwhile)."""
        while folder != self.root and folder.name not in ("pending", "failed", "done", "_leases"):
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    # compare-and-swap ---------------------------------------------------------------------------

    @staticmethod
    def _token(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialises read-check-write of lease files across processes (they are tiny and rare, so one
        guard for the whole folder is enough); the kernel drops the flock if the process dies."""
        fd = os.open(self.root / ".lease-guard", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def create_exclusive(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._guard():  # so nobody reads the lease between its creation and its content
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise PreconditionFailed(f"{key} already exists") from None
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        return self._token(data)

    def read_with_token(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, self._token(data)

    def replace_if(self, key: str, data: bytes, token: str) -> str:
        with self._guard():
            current = self.read_with_token(key)
            if current is None or current[1] != token:
                raise PreconditionFailed(f"{key} changed")
            self.write(key, data)
        return self._token(data)

    def delete_if(self, key: str, token: str) -> None:
        with self._guard():
            current = self.read_with_token(key)
            if current is None:
                return
            if current[1] != token:
                raise PreconditionFailed(f"{key} changed")
            path = self._path(key)
            path.unlink()
            self._prune(path.parent)


# -- Google Cloud Storage ----------------------------------------------------------------------


class GCSBucket:
    """google-cloud-storage, with explicit timeouts and a bounded retry deadline on every call.

    Credentials are the usual Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, workload
    identity, gcloud auth). STORAGE_EMULATOR_HOST, when set, is honoured by the client library itself.
    """

    def __init__(self, bucket_name: str, prefix: str = "") -> None:
        self.bucket_name = bucket_name
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"gs://{bucket_name}/{prefix}".rstrip("/")
        self._client = None
        self._bucket = None
        deadline = float(os.environ.get(RETRY_DEADLINE_ENV, DEFAULT_RETRY_DEADLINE_SECONDS))
        from google.cloud.storage.retry import DEFAULT_RETRY

        self._retry = DEFAULT_RETRY.with_deadline(deadline).with_timeout(deadline)
        self._timeout = (min(10.0, deadline), DEFAULT_TIMEOUT_SECONDS)

    @property
    def bucket(self) -> Any:  # google.cloud.storage.Bucket
        if self._bucket is None:
            from google.cloud import storage

            try:
                self._client = storage.Client()
            except Exception as exc:
                raise BucketUnreachableError(
                    f"cannot create a Google Cloud Storage client for {self.url}: {_reason(exc)}"
                ) from None
            self._bucket = self._client.bucket(self.bucket_name)
        return self._bucket

    def _name(self, key: str) -> str:
        return self.prefix + key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) :]

    def _info(self, blob: Any) -> ObjectInfo:
        return ObjectInfo(
            key=self._key(blob.name),
            size=int(blob.size or 0),
            generation=int(blob.generation),
            updated=blob.updated,
        )

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from google.api_core import exceptions as gexc

        try:
            yield
        except gexc.PreconditionFailed:
            raise PreconditionFailed(what) from None
        except gexc.NotFound:
            raise BucketUnreachableError(
                f"bucket {self.url} does not exist or is not visible to these credentials"
            ) from None
        except (gexc.Forbidden, gexc.Unauthorized) as exc:
            raise BucketUnreachableError(f"access to {self.url} refused: {_reason(exc)}") from None
        except BucketError:
            raise
        except Exception as exc:  # connection refused, DNS, timeouts after the retry deadline
            raise BucketUnreachableError(f"cannot reach {self.url} ({what}): {_reason(exc)}") from None

    def check(self) -> None:
        with self._errors("listing the bucket"):
            blobs = self.bucket.client.list_blobs(
                self.bucket_name, prefix=self.prefix, max_results=1, timeout=self._timeout, retry=self._retry
            )
            list(blobs)

    def object_url(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._errors(f"listing {prefix}"):
            blobs = list(
                self.bucket.client.list_blobs(
                    self.bucket_name, prefix=self._name(prefix), timeout=self._timeout, retry=self._retry
                )
            )
        for blob in sorted(blobs, key=lambda b: b.name):
            if not blob.name.endswith("/"):  # folder placeholders made by consoles
                yield self._info(blob)

    def stat(self, key: str) -> ObjectInfo | None:
        with self._errors(f"reading metadata of {key}"):
            blob = self.bucket.get_blob(self._name(key), timeout=self._timeout, retry=self._retry)
        return None if blob is None else self._info(blob)

    def open(self, info: ObjectInfo) -> IO[bytes]:
        blob = self.bucket.blob(self._name(info.key), generation=info.generation)
        with self._errors(f"opening {info.key}"):
            # raw_download: the bytes as stored (a gzip file stays gzip; we decompress it ourselves)
            return blob.open("rb", chunk_size=8 * 1024 * 1024, raw_download=True, retry=self._retry)

    def write(self, key: str, data: bytes) -> ObjectInfo:
        blob = self.bucket.blob(self._name(key))
        with self._errors(f"writing {key}"):
            blob.upload_from_string(data, timeout=self._timeout, retry=self._retry)
        return self._info(blob)

    def move(self, info: ObjectInfo, new_key: str) -> None:
        source = self.bucket.blob(self._name(info.key))
        with self._errors(f"copying {info.key} to {new_key}"):
            self.bucket.copy_blob(
                source,
                self.bucket,
                self._name(new_key),
                source_generation=info.generation,
                timeout=self._timeout,
                retry=self._retry,
            )
        from google.api_core import exceptions as gexc

        # PreconditionFailed: a newer upload replaced it (it stays for the next run); NotFound: gone
        with (
            self._errors(f"deleting {info.key}"),
            contextlib.suppress(gexc.PreconditionFailed, gexc.NotFound),
        ):
            source.delete(if_generation_match=info.generation, timeout=self._timeout, retry=self._retry)

    def create_exclusive(self, key: str, data: bytes) -> str:
        blob = self.bucket.blob(self._name(key))
        with self._errors(f"creating {key}"):
            blob.upload_from_string(data, if_generation_match=0, timeout=self._timeout, retry=self._retry)
        return str(blob.generation)

    def read_with_token(self, key: str) -> tuple[bytes, str] | None:
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self._name(key))
        with self._errors(f"reading {key}"):
            try:
                data = blob.download_as_bytes(timeout=self._timeout, retry=self._retry)
            except gexc.NotFound:
                return None
        return data, str(blob.generation)

    def replace_if(self, key: str, data: bytes, token: str) -> str:
        blob = self.bucket.blob(self._name(key))
        with self._errors(f"replacing {key}"):
            blob.upload_from_string(
                data, if_generation_match=int(token), timeout=self._timeout, retry=self._retry
            )
        return str(blob.generation)

    def delete_if(self, key: str, token: str) -> None:
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self._name(key))
        with self._errors(f"deleting {key}"):
            try:
                blob.delete(if_generation_match=int(token), timeout=self._timeout, retry=self._retry)
            except gexc.NotFound:
                return


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
