"""Leases that live in the bucket itself, so two runs never process the same file, whatever the warehouse.

A lease is a small JSON object `{run_id, owner, acquired_at, expires_at}` at a key derived from what it
protects. It is taken with create-if-absent (GCS: `if_generation_match=0`; folder: O_EXCL), renewed and
taken over with compare-and-swap on its generation, and released with delete-if-unchanged. A run that
crashed simply stops renewing: once `expires_at` has passed, the next run takes the lease over, so a
crash never blocks a file forever.

Leases make concurrent runs efficient and orderly; they are not what makes loading exactly-once (that is
the warehouse's merge on the payload's primary key plus the registry of loaded files), so the worst a
clock skew or an expired-but-alive holder can cause is duplicated work, never duplicated rows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from loaders.gcs.bucket import Bucket, BucketError, PreconditionFailed

DEFAULT_LEASE_SECONDS = 600.0


@dataclass
class Lease:
    key: str
    token: str
    run_id: str
    expires_at: dt.datetime
    lost: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease that we could not take."""

    run_id: str
    owner: str
    expires_at: dt.datetime


class LeaseManager:
    """Acquires, renews (in a background thread) and releases this run's leases."""

    def __init__(self, bucket: Bucket, run_id: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.bucket = bucket
        self.run_id = run_id
        self.lease_seconds = lease_seconds
        self.owner = f"{_user()}@{socket.gethostname()} pid {os.getpid()}"
        self._held: dict[str, Lease] = {}
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # payload ------------------------------------------------------------------------------------

    def _payload(self, expires_at: dt.datetime) -> bytes:
        now = dt.datetime.now(dt.UTC)
        return json.dumps(
            {
                "run_id": self.run_id,
                "owner": self.owner,
                "acquired_at": now.isoformat(),
                "expires_at": expires_at.isoformat(),
            }
        ).encode()

    def _expiry(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.lease_seconds)

    # acquire / release --------------------------------------------------------------------------

    def acquire(self, key: str) -> Lease | Holder:
        """Our lease on `key`, or who holds it (a live lease of another run)."""
        expires = self._expiry()
        try:
            token = self.bucket.create_exclusive(key, self._payload(expires))
        except PreconditionFailed:
            current = self.bucket.read_with_token(key)
            if current is None:  # released meanwhile: try once more
                return self.acquire(key)
            data, token_seen = current
            holder = _parse(data)
            if holder.expires_at > dt.datetime.now(dt.UTC):
                return holder
            try:  # expired: take it over, unless somebody else just did
                token = self.bucket.replace_if(key, self._payload(expires), token_seen)
            except PreconditionFailed:
                current = self.bucket.read_with_token(key)
                return _parse(current[0]) if current else self.acquire(key)
        lease = Lease(key=key, token=token, run_id=self.run_id, expires_at=expires)
        with self._held_lock:
            self._held[key] = lease
        self._ensure_heartbeat()
        return lease

    @contextmanager
    def wait_for(self, key: str, timeout_seconds: float, poll_seconds: float = 0.5) -> Iterator[Lease]:
        """Hold `key` for the block, waiting up to `timeout_seconds` for another run to release it."""
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout_seconds)
        while True:
            got = self.acquire(key)
            if isinstance(got, Lease):
                break
            if dt.datetime.now(dt.UTC) >= deadline:
                raise LeaseBusy(key, got)
            self._stop.wait(poll_seconds)
        try:
            yield got
        finally:
            self.release(got)

    def release(self, lease: Lease) -> None:
        with self._held_lock:
            self._held.pop(lease.key, None)
        with lease._lock:
            if lease.lost:
                return
            with suppress(PreconditionFailed, BucketError):
                self.bucket.delete_if(lease.key, lease.token)
            lease.lost = True

    def renew(self, lease: Lease) -> bool:
        """Extend the lease; False (and `lease.lost`) if another run took it over meanwhile."""
        with lease._lock:
            if lease.lost:
                return False
            expires = self._expiry()
            try:
                lease.token = self.bucket.replace_if(lease.key, self._payload(expires), lease.token)
                lease.expires_at = expires
            except PreconditionFailed:
                lease.lost = True
            except BucketError:
                pass  # transient: try again at the next beat; expiry is still ahead of us
        return not lease.lost

    def close(self) -> None:
        """Stop renewing and release whatever is still held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._held_lock:
            held = list(self._held.values())
        for lease in held:
            self.release(lease)

    # heartbeat ----------------------------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="gcs-lease-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        interval = max(self.lease_seconds / 3, 0.2)
        while not self._stop.wait(interval):
            with self._held_lock:
                held = list(self._held.values())
            for lease in held:
                self.renew(lease)


class LeaseBusy(RuntimeError):
    def __init__(self, key: str, holder: Holder) -> None:
        super().__init__(
            f"{key} is held by run {holder.run_id} ({holder.owner}) until {holder.expires_at.isoformat()}"
        )
        self.holder = holder


def _parse(data: bytes) -> Holder:
    try:
        doc = json.loads(data)
        return Holder(
            run_id=str(doc.get("run_id")),
            owner=str(doc.get("owner")),
            expires_at=dt.datetime.fromisoformat(doc["expires_at"]),
        )
    except (ValueError, KeyError, TypeError):  # unreadable lease: treat as expired
        return Holder(run_id="unknown", owner="unknown", expires_at=dt.datetime.min.replace(tzinfo=dt.UTC))


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return "unknown"
