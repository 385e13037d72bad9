"""One writer per backbone: flock on local stores (freed when the holder dies), heartbeat leases on S3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from featurestore.store import open_store
from featurestore.store.lock import LeaseLock, StoreLockedError

HOLDER = textwrap.dedent("""
    import sys, time
    from featurestore.store import open_store
    lock = open_store(sys.argv[1], mode="a").lock("alexnet")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
    print("released", flush=True)
""")


def hold_in_subprocess(store: str, seconds: float) -> subprocess.Popen:
    """A separate process that takes the lock of backbone 'alexnet' and keeps it for ``seconds``."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, store, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_second_writer_is_refused_with_the_holder(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    first = store.lock("alexnet")
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()} on host .* since 20"):
        open_store(tmp_path / "s.zarr", mode="a").lock("alexnet")
    store.lock("vit").release()  # other backbones are independent
    first.release()
    open_store(tmp_path / "s.zarr", mode="a").lock("alexnet").release()


def test_lock_of_a_killed_process_is_free(tmp_path) -> None:
    child = hold_in_subprocess(str(tmp_path / "s.zarr"), 120)
    try:
        with pytest.raises(StoreLockedError, match=f"pid {child.pid} "):
            open_store(tmp_path / "s.zarr", mode="a").lock("alexnet")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with open_store(tmp_path / "s.zarr", mode="a").lock("alexnet") as lock:
        assert lock.holder()["pid"] == os.getpid()


def test_waiting_writer_gets_the_lock_when_released(tmp_path) -> None:
    child = hold_in_subprocess(str(tmp_path / "s.zarr"), 1.0)
    lock = open_store(tmp_path / "s.zarr", mode="a").lock("alexnet", wait=60)
    assert child.stdout.readline().strip() == "released"
    assert lock.holder()["pid"] == os.getpid()
    lock.release()
    child.wait()


def test_lease_on_s3_refuses_then_is_taken_over_when_stale(s3_bucket) -> None:
    url = f"{s3_bucket.url}/s.zarr"
    first = open_store(url, mode="a", storage_options=s3_bucket.storage_options).lock("alexnet", stale_after=60)
    second_store = open_store(url, mode="a", storage_options=s3_bucket.storage_options)
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()} on host"):
        second_store.lock("alexnet", stale_after=60)
    first.refresh()  # still ours: heartbeat goes on
    stale = LeaseLock(second_store.zarr_store, "alexnet", "test", stale_after=0.0, settle_s=0.1)
    time.sleep(0.05)
    stale.acquire()  # heartbeat older than stale_after: taken over
    with pytest.raises(StoreLockedError, match="lost the writer lease"):
        first.refresh()
    first.release()  # not ours any more: leaves the new holder alone
    assert stale.holder()["token"] == stale.token
    stale.release()
    assert stale.holder() == {}
