"""Sharded extraction on a real dask.distributed LocalCluster: the same bytes as a single-process run, locally and on
an S3 server (moto), after a worker is SIGKILLed mid-task, and clear errors for an unreachable scheduler, a worker
without the weights file and a second writer."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import numpy as np
import pytest
import zarr

import featurestore.backbones
from featurestore import InvalidParameterError
from featurestore.cli import main
from featurestore.distributed import SchedulerUnreachableError, WorkerSetupError, connect
from featurestore.extract import extract
from featurestore.stimuli import StimulusError
from featurestore.store import StoreLockedError, open_store

distributed = pytest.importorskip("distributed")
distributed_module = sys.modules["featurestore.distributed"]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module

BACKBONE = "alexnet.tiny"
RUN = {"chunk_rows": 2, "batch_size": 2, "num_workers": 0, "progress": False, "device": "cpu"}  # 4 chunks of 8 ids


def group_arrays(store: str | Path, **options) -> dict[str, np.ndarray]:
    """Every array of the backbone group (ids, each layer, each layer's done markers) by path, raw."""
    group = zarr.open_group(store, mode="r", **options)[BACKBONE]
    return {path: array[:] for path, array in group.members(max_depth=None) if isinstance(array, zarr.Array)}


def assert_same_store(store: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    """The same arrays with the same bytes (NaN padding included)."""
    assert sorted(store) == sorted(reference)
    assert {"nsd_id", "features.2", "_done/features.2", "classifier.5", "_done/classifier.5"} <= set(reference)
    for path, values in reference.items():
        assert np.array_equal(store[path].view(np.uint8), values.view(np.uint8)), path


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A LocalCluster of 2 single-threaded worker processes, started the way ``--scheduler local:2`` starts it."""
    with connect("local:2") as started:
        yield started


@pytest.fixture(scope="module")
def reference(tmp_path_factory, algonauts_dir, tiny_catalog) -> dict[str, np.ndarray]:
    """The single-process store of both subjects' 8 images (every layer of ``alexnet.tiny``)."""
    store = tmp_path_factory.mktemp("reference") / "features.zarr"
    extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN)
    return group_arrays(store)


def _count_backbone_loads() -> None:
    """On a worker: count calls of ``load_backbone`` in ``featurestore.backbones.loads``."""
    import featurestore.backbones as backbones

    load, backbones.loads = backbones.load_backbone, 0

    def counted(*args, **kwargs):
        backbones.loads += 1
        return load(*args, **kwargs)

    backbones.load_backbone = counted


def _backbone_loads() -> int:
    """On a worker: the count of ``_count_backbone_loads``."""
    import featurestore.backbones as backbones

    return backbones.loads


def test_two_workers_write_the_single_process_store(tmp_path, client, reference, algonauts_dir, tiny_catalog) -> None:
    client.wait_for_workers(2)
    client.run(_count_backbone_loads)
    store = tmp_path / "s.zarr"
    report = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, scheduler=client, **RUN)
    assert (report.rows_computed, report.chunks_written) == (8, 4)
    assert_same_store(group_arrays(store), reference)
    loads = client.run(_backbone_loads)
    assert sorted(loads.values()) in ([0, 1], [1, 1])  # 4 chunks on 2 workers: each loaded the backbone once at most
    again = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, scheduler=client, **RUN)
    assert again.rows_computed == 0 and again.chunks_written == 0


def test_workers_preprocess_on_the_path_the_client_records(tmp_path, client, algonauts_dir, tiny_catalog) -> None:
    """The device path asked for is the workers' path too: the store equals a single process on that path, and the
    provenance says so (a client whose probe runs on the CPU would otherwise record PIL)."""
    single, store = tmp_path / "single.zarr", tmp_path / "s.zarr"
    extract(BACKBONE, algonauts_dir, single, catalog=tiny_catalog, preprocess_on="device", **RUN)
    extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, preprocess_on="device", scheduler=client, **RUN)
    assert_same_store(group_arrays(store), group_arrays(single))
    assert open_store(store).provenance(BACKBONE)["preprocessing"]["path"] == "device"


def test_a_cluster_finishes_a_single_process_store_and_the_cli_joins_by_address(
    tmp_path, capsys, client, algonauts_dir, tiny_catalog
) -> None:
    store, single = tmp_path / "s.zarr", tmp_path / "single.zarr"
    for target in (store, single):
        extract(BACKBONE, algonauts_dir, target, catalog=tiny_catalog, subjects=[2], **RUN)  # 5 of the 8 ids
    extract(BACKBONE, algonauts_dir, single, catalog=tiny_catalog, **RUN)
    words = "extract --backbone alexnet.tiny --chunk-rows 2 --batch-size 2 --workers 0 --no-progress --device cpu"
    argv = [*words.split(), "--images", str(algonauts_dir), "--store", str(store), "--catalog", *map(str, tiny_catalog)]
    assert main([*argv, "--scheduler", client.scheduler.address]) == 0
    assert "3 images through the model, 2 chunk(s) written, 3 new ids" in capsys.readouterr().out
    assert_same_store(group_arrays(store), group_arrays(single))  # the last chunk of the first run was rewritten


def test_store_on_s3_equals_the_local_single_process_store(s3_bucket, client, reference, algonauts_dir, tiny_catalog):
    url, options = f"{s3_bucket.url}/features.zarr", s3_bucket.storage_options
    report = extract(
        BACKBONE, algonauts_dir, url, catalog=tiny_catalog, storage_options=options, scheduler=client, **RUN
    )
    assert report.chunks_written == 4
    assert_same_store(group_arrays(url, storage_options=options), reference)


def _slow_chunk_writes(seconds: float) -> None:
    """On a worker: every chunk write takes ``seconds`` longer (a slow disk), so a kill lands mid-task."""
    from featurestore.store import FeatureStore

    write_chunk = FeatureStore.write_chunk

    def slow(*args, **kwargs):
        time.sleep(seconds)
        write_chunk(*args, **kwargs)

    FeatureStore.write_chunk = slow


def test_sigkilled_worker_costs_only_its_chunk(tmp_path, client, reference, algonauts_dir, tiny_catalog) -> None:
    client.wait_for_workers(2)
    client.run(_slow_chunk_writes, 0.4)
    store = tmp_path / "s.zarr"
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["report"] = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, scheduler=client, **RUN)
        except BaseException as error:  # re-raised below, in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    busy: dict[str, list[str]] = {}
    while thread.is_alive() and time.monotonic() < deadline and not busy:
        if any(store.glob(f"{BACKBONE}/_done/*/c/*")):  # under way: some chunk's first layer is marked
            busy = {worker: [str(key) for key in keys] for worker, keys in client.processing().items() if keys}
        time.sleep(0.05)
    assert busy, "no worker was running a chunk"
    victim, keys = next(iter(busy.items()))
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    marked = open_store(store).done_counts(BACKBONE, "classifier.5")  # a chunk's last layer is marked last
    lost = [int(key.split("-")[2]) for key in keys if marked[int(key.split("-")[2])] == 0]
    assert lost, f"the kill landed after the chunks of {keys} were finished"
    thread.join(timeout=240)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    report = outcome["report"]
    assert pid not in client.run(os.getpid).values()  # the nanny restarted the killed worker as a new process
    assert (report.rows_computed, report.chunks_written) == (8, 4)  # the lost chunks ran again
    assert all(open_store(store).done_counts(BACKBONE, "classifier.5")[lost] == 2)
    assert_same_store(group_arrays(store), reference)


def test_unreadable_images_stop_or_are_skipped_as_in_one_process(tmp_path, client, algonauts_dir, tiny_catalog):
    data = tmp_path / "data"
    shutil.copytree(algonauts_dir, data)
    for nsd_id in (845, 61000):  # rows 2 and 6: chunks 1 and 3, so two workers may record skipped images at once
        for path in data.rglob(f"*_nsd-{nsd_id:05d}.png"):
            path.write_bytes(b"")
    store, single = tmp_path / "s.zarr", tmp_path / "single.zarr"
    with pytest.raises(StimulusError, match=r"nsd-(00845|61000)\.png: the file is empty"):
        extract(BACKBONE, data, store, catalog=tiny_catalog, scheduler=client, **RUN)
    report = extract(BACKBONE, data, store, catalog=tiny_catalog, scheduler=client, skip_bad_images=True, **RUN)
    extract(BACKBONE, data, single, catalog=tiny_catalog, skip_bad_images=True, **RUN)
    assert [image["nsd_id"] for image in report.skipped_images] == [845, 61000]
    assert open_store(store).skipped_images(BACKBONE) == open_store(single).skipped_images(BACKBONE)
    assert_same_store(group_arrays(store), group_arrays(single))


def test_each_worker_of_a_multi_gpu_node_takes_its_own_gpu(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    worker = SimpleNamespace(name="SLURMCluster-3-2", address="tcp://10.0.0.5:40001")
    monkeypatch.setattr(distributed, "get_worker", lambda: worker)
    assert distributed_module._worker_device(None) == "cuda:2"
    assert distributed_module._worker_device("cuda") == "cuda:2"
    assert distributed_module._worker_device("cuda:1") == "cuda:1"  # an explicit index is kept
    worker.name = 5
    assert distributed_module._worker_device(None) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed_module._worker_device(None) is None  # one visible GPU: the default device


def test_local_cluster_starts_only_when_there_is_work(tmp_path, monkeypatch, algonauts_dir, tiny_catalog) -> None:
    store = tmp_path / "s.zarr"
    extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN)
    monkeypatch.setattr(distributed_module, "_local_cluster", lambda n: pytest.fail("a cluster was started"))
    report = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, scheduler="local:2", **RUN)
    assert report.rows_computed == 0 and report.chunks_written == 0


def free_port() -> int:
    """A localhost TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, algonauts_dir) -> None:
    monkeypatch.setattr(distributed_module, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    store = tmp_path / "s.zarr"
    with pytest.raises(SchedulerUnreachableError, match=f"cannot reach the dask scheduler at {address}"):
        extract("alexnet", algonauts_dir, store, scheduler=address, **RUN)
    argv = ["extract", "--backbone", "alexnet", "--images", str(algonauts_dir), "--store", str(store)]
    assert main([*argv, "--scheduler", address]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featurestore: error: cannot reach the dask scheduler at")
    assert not store.exists()


def test_scheduler_value_is_checked(tmp_path, algonauts_dir) -> None:
    with pytest.raises(ValueError, match="Unknown scheduler='gpu'"):
        extract(BACKBONE, algonauts_dir, tmp_path / "s.zarr", scheduler="gpu", **RUN)
    with pytest.raises(SystemExit):
        main(["extract", "--backbone", "b", "--images", "i", "--store", "s", "--scheduler", "local:0"])
    assert not (tmp_path / "s.zarr").exists()


def test_worker_without_the_weights_file_is_named_with_the_path(
    tmp_path, monkeypatch, client, algonauts_dir, tiny_catalog, untrained_weights
) -> None:
    weights = tmp_path / "only-on-the-client.pt"
    shutil.copy(untrained_weights["alexnet"], weights)
    catalog = tmp_path / "c.yaml"
    catalog.write_text(f'here:\n  extends: {BACKBONE}\n  weights: "file:{weights}"\n', encoding="utf-8")
    load = featurestore.backbones.load_backbone

    def load_then_lose_the_file(*args, **kwargs):  # the client loads it; the workers (other processes) do not
        loaded = load(*args, **kwargs)
        weights.unlink()
        return loaded

    monkeypatch.setattr(featurestore.backbones, "load_backbone", load_then_lose_the_file)
    store = tmp_path / "s.zarr"
    with pytest.raises(WorkerSetupError, match=rf"worker tcp://127\.0\.0\.1:\d+ .* has no weights file {weights}"):
        extract("here", algonauts_dir, store, catalog=[*tiny_catalog, catalog], scheduler=client, **RUN)
    assert open_store(store).ids("here", "features.2").size == 0


def test_decode_processes_inside_daemonic_workers_are_refused(tmp_path, client, algonauts_dir, tiny_catalog) -> None:
    store = tmp_path / "s.zarr"
    with pytest.raises(InvalidParameterError, match=r"worker tcp://.* is a daemonic process .* num_workers=1"):
        extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, scheduler=client, **{**RUN, "num_workers": 1})
    assert open_store(store).ids(BACKBONE, "features.2").size == 0


def test_a_worker_stops_before_writing_once_the_lock_names_another_writer(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    with store.lock(BACKBONE) as held:
        distributed_module._ClientLock(store, BACKBONE, held.token).refresh()  # the run's own lock: go on
        with pytest.raises(StoreLockedError, match=f"now held by pid {os.getpid()} .* stopped before writing"):
            distributed_module._ClientLock(store, BACKBONE, "a-run-whose-lease-was-taken-over").refresh()


def test_second_writer_is_refused(tmp_path, client, algonauts_dir, tiny_catalog) -> None:
    store = tmp_path / "s.zarr"
    with open_store(store, mode="a").lock(BACKBONE):
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, scheduler=client, **RUN)
    assert not open_store(store).has_backbone(BACKBONE)
