"""One writer per backbone group: a kernel file lock on local stores, a heartbeat lease on object stores.

The lock of backbone ``B`` is the zarr group ``_locks/B`` of the store; its attributes name the holder (host,
pid, since, heartbeat), so a refused writer can say who is writing. On a local path the group's directory
is ``flock``-ed: the kernel releases it when the holder exits or is killed, so a SIGKILLed run never blocks
its own resume. Object stores (``s3://``...) have no locks, so there the attributes are a lease: written,
re-read after a short settle delay to detect a racing writer (best effort: object stores offer no
compare-and-swap here), refreshed once per written chunk, and taken over once its heartbeat is older than
``stale_after`` seconds.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import zarr
from zarr.abc.store import Store

from featurestore.errors import FeatureStoreError

LOCKS_GROUP = "_locks"
DEFAULT_STALE_AFTER = 900.0

logger = logging.getLogger(__name__)


class StoreLockedError(FeatureStoreError, RuntimeError):
    """Another process is writing this backbone group (or took over our lease)."""


def _now_iso() -> str:
    """The current UTC time, to the second, for humans reading a lock holder."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class WriterLock(ABC):
    """Exclusive right to write one backbone group; use as a context manager."""

    def __init__(self, store: Store, backbone: str, description: str) -> None:
        self.store = store
        self.backbone = backbone
        self.description = description
        self.path = f"{LOCKS_GROUP}/{backbone}"
        self.token = uuid.uuid4().hex
        self.held = False

    def holder(self) -> dict[str, Any]:
        """The holder recorded in the lock's attributes ({} when none is recorded)."""
        try:
            return dict(zarr.open_group(self.store, path=self.path, mode="r").attrs)
        except FileNotFoundError:
            return {}

    def _record(self, attrs: dict[str, Any]) -> None:
        """Overwrite the lock's attributes (creating the lock group on first use)."""
        zarr.open_group(self.store, path=self.path, mode="a").attrs.put(attrs)

    def _me(self) -> dict[str, Any]:
        """Attributes naming this process as the holder."""
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": _now_iso(),
            "heartbeat": time.time(),
            "token": self.token,
        }

    @staticmethod
    def _who(holder: dict[str, Any]) -> str:
        """A holder in words: pid, host and start time."""
        if holder.get("pid") is None:
            return "another process (its details are not recorded yet)"
        return f"pid {holder['pid']} on host {holder.get('host')} since {holder.get('since')}"

    def _refusal(self, holder: dict[str, Any]) -> str:
        """The message telling the user who holds the lock and what to do."""
        return (
            f"{self.description} is being written by {self._who(holder)} (lock {self.path!r}); wait for that "
            f"run to finish, or pass wait=True (CLI: --wait) to queue behind it"
        )

    @abstractmethod
    def _try_acquire(self) -> dict[str, Any] | None:
        """Take the lock if free; return None on success, else the current holder."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock back (no-op when not held)."""

    @abstractmethod
    def refresh(self) -> None:
        """Prove we are alive (leases) and that the lock is still ours; raise StoreLockedError if not."""

    def acquire(self, wait: bool | float = False, poll_s: float = 1.0) -> WriterLock:
        """Take the lock; refuse at once (wait=False), wait forever (True) or up to ``wait`` seconds."""
        deadline = None if wait is True else time.monotonic() + (0.0 if wait is False else float(wait))
        logged = False
        while True:
            holder = self._try_acquire()
            if holder is None:
                self.held = True
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise StoreLockedError(self._refusal(holder))
            if not logged:
                logger.info("waiting: %s", self._refusal(holder))
                logged = True
            time.sleep(poll_s)

    def __enter__(self) -> WriterLock:
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FileLock(WriterLock):
    """``flock`` on the lock group's directory; the kernel frees it when the holder dies."""

    def __init__(self, store: Store, backbone: str, description: str, root: Path) -> None:
        super().__init__(store, backbone, description)
        self.directory = Path(root) / self.path
        self._fd: int | None = None

    def _try_acquire(self) -> dict[str, Any] | None:
        if not self.directory.is_dir():
            zarr.open_group(self.store, path=self.path, mode="a")
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return self.holder()
        self._fd = fd
        self._record(self._me())
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self._record({})
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            self.held = False

    def refresh(self) -> None:
        if self._fd is None:
            raise StoreLockedError(f"{self.description}: refresh() on a lock that is not held")


class LeaseLock(WriterLock):
    """A lease in the lock group's attributes: heartbeat per chunk, stale after ``stale_after`` seconds."""

    def __init__(
        self,
        store: Store,
        backbone: str,
        description: str,
        *,
        stale_after: float = DEFAULT_STALE_AFTER,
        settle_s: float = 0.5,
    ) -> None:
        super().__init__(store, backbone, description)
        self.stale_after = stale_after
        self.settle_s = settle_s

    def _is_live(self, holder: dict[str, Any]) -> bool:
        """True when someone else holds a lease whose heartbeat is recent."""
        if not holder.get("token") or holder["token"] == self.token:
            return False
        return time.time() - float(holder.get("heartbeat", 0.0)) < self.stale_after

    def _try_acquire(self) -> dict[str, Any] | None:
        holder = self.holder()
        if self._is_live(holder):
            return holder
        if holder.get("token"):
            logger.warning(
                "taking over the stale lease of pid %s on host %s (last heartbeat %.0f s ago)",
                holder.get("pid"),
                holder.get("host"),
                time.time() - float(holder.get("heartbeat", 0)),
            )
        self._record(self._me())
        time.sleep(self.settle_s)
        holder = self.holder()
        return None if holder.get("token") == self.token else holder

    def release(self) -> None:
        if not self.held:
            return
        if self.holder().get("token") == self.token:
            self._record({})
        self.held = False

    def refresh(self) -> None:
        holder = self.holder()
        if holder.get("token") != self.token:
            self.held = False
            raise StoreLockedError(
                f"{self.description}: lost the writer lease to {self._who(holder)}; stopped before writing "
                f"more (chunks already marked done are kept)"
            )
        holder["heartbeat"] = time.time()
        self._record(holder)
