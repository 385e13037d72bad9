"""The Zarr layout: row planning, whole-chunk writes with per-chunk markers, provenance, lazy reads, sharding, S3."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.storage import LocalStore

from featurestore.store import (
    FeatureStore,
    LayerLayout,
    ProvenanceError,
    RowPlan,
    build_provenance,
    open_features,
    open_store,
    plan_rows,
)
from featurestore.store import layout as layout_module
from featurestore.store import reader as reader_module

ENTRY = {"name": "toy", "source": "torchvision", "architecture": "alexnet", "weights": "untrained", "seed": 0}
WEIGHTS = {"weights": "untrained", "sha256": "ab12" * 16}
PREPROCESSING = {"resize": 8, "crop": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3}
LAYOUTS = (LayerLayout("conv", (2, 3, 3), 18), LayerLayout("fc", (5,), 5))
TINY_INNER_BYTES = 16  # with chunk_rows=2 in float16: 4-column feature blocks, so conv (18) is sharded, fc (5) not
READS: list[tuple[str, object]] = []


class CountingLocalStore(LocalStore):
    """A local zarr store that records the key and byte range of every read."""

    async def get(self, key, prototype=None, byte_range=None):
        READS.append((key, byte_range))
        return await super().get(key, prototype, byte_range)


@pytest.fixture
def tiny_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shard layers wider than 16 columns (4-column inner chunks), as real layers of 300k features are."""
    monkeypatch.setattr(layout_module, "INNER_CHUNK_BYTES", TINY_INNER_BYTES)


def features_of(nsd_id: int, layout: LayerLayout) -> np.ndarray:
    """Made-up features that depend only on the id and the layer (the 'model' of these tests)."""
    return np.random.default_rng([nsd_id, layout.n_features]).normal(size=layout.n_features).astype(np.float32)


def provenance(**changes: object) -> dict:
    """A provenance with the defaults above, optionally changed."""
    args = {
        "entry": ENTRY,
        "weights": WEIGHTS,
        "preprocessing": PREPROCESSING,
        "dtype": "float16",
        "chunk_rows": 2,
        **changes,
    }
    return build_provenance(**args)


def run(
    store: FeatureStore, ids: list[int], layouts=LAYOUTS, stop_after: int | None = None, prov: dict | None = None
) -> RowPlan:
    """Plan, apply and write like the extraction engine does, optionally stopping after some chunks."""
    prov = prov or provenance()
    store.check_provenance("toy", prov, layouts)
    plan = store.plan("toy", np.array(ids), [layout.name for layout in layouts], prov["chunk_rows"])
    store.apply_plan(plan, prov, layouts)
    for task in plan.tasks[:stop_after]:
        for layout in layouts:
            if layout.name in task.done:
                rows = np.stack([features_of(i, layout) for i in plan.nsd_ids[task.compute_from : task.stop]])
                store.write_chunk("toy", layout.name, task, rows)
    return plan


def expected(ids, layout: LayerLayout) -> np.ndarray:
    """What the store should return for ``ids`` after the float16 cast."""
    return np.stack([features_of(i, layout) for i in ids]).astype(np.float16)


def test_plan_appends_unseen_ids_sorted_after_planned_rows() -> None:
    plan = plan_rows(np.array([5, 3]), {"a": np.array([2])}, np.array([3, 9, 7, 5, 1, 9]), chunk_rows=2)
    np.testing.assert_array_equal(plan.new_ids, [1, 7, 9])
    np.testing.assert_array_equal(plan.nsd_ids, [5, 3, 1, 7, 9])
    assert [(t.index, t.start, t.stop, t.compute_from, dict(t.done)) for t in plan.tasks] == [
        (1, 2, 4, 2, {"a": 0}),
        (2, 4, 5, 4, {"a": 0}),
    ]
    np.testing.assert_array_equal(plan.ids_to_compute, [1, 7, 9])
    assert plan.rows_to_write("a") == 3


def test_plan_computes_from_the_least_finished_layer_of_a_chunk() -> None:
    done = {"old": np.array([3, 1]), "new": np.array([0])}
    plan = plan_rows(np.array([10, 11, 12, 13]), done, np.arange(10, 16), chunk_rows=3)
    np.testing.assert_array_equal(plan.nsd_ids, [10, 11, 12, 13, 14, 15])
    assert [(t.index, t.compute_from, dict(t.done)) for t in plan.tasks] == [
        (0, 0, {"new": 0}),
        (1, 3, {"old": 1, "new": 0}),
    ]
    assert plan.rows_to_write("old") == 2 and plan.rows_to_write("new") == 6


def test_plan_sets_aside_chunks_whose_images_are_missing() -> None:
    plan = plan_rows(np.array([1, 2, 3, 4]), {"a": np.array([2, 0])}, np.array([1, 2, 8]), chunk_rows=2)
    np.testing.assert_array_equal(plan.nsd_ids, [1, 2, 3, 4, 8])
    assert [t.index for t in plan.tasks] == [2]
    assert [t.index for t in plan.unavailable] == [1]


def test_plan_rejects_empty_chunks() -> None:
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        plan_rows(np.array([]), {}, np.array([1]), chunk_rows=0)


def test_roundtrip_layout_and_lazy_reads(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [40, 7, 13, 2, 29])
    conv = open_features(tmp_path / "s.zarr", "toy", "conv")
    assert conv.dims == ("nsd_id", "feature") and conv.dtype == np.float16 and conv.nsd_id.dtype == np.int64
    np.testing.assert_array_equal(conv.nsd_id, [2, 7, 13, 29, 40])
    np.testing.assert_array_equal(conv.values, expected([2, 7, 13, 29, 40], LAYOUTS[0]))
    assert conv.data.chunks[0] == (5,)  # a tiny layer: all row chunks in one read task
    asked = [29, 2, 40]
    np.testing.assert_array_equal(conv.sel(nsd_id=asked).values, expected(asked, LAYOUTS[0]))
    assert conv.attrs["feature_shape"] == [2, 3, 3]
    assert json.loads(conv.attrs["provenance"])["weights"]["sha256"] == WEIGHTS["sha256"]
    raw = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["toy"]
    assert raw["conv"].chunks == (2, 18) and raw["fc"].chunks == (2, 5) and raw["nsd_id"].dtype == np.int64
    reopened = open_store(tmp_path / "s.zarr")
    assert reopened.backbones() == ["toy"] and reopened.layers("toy") == ["conv", "fc"]
    assert reopened.layout("toy", "fc") == LAYOUTS[1]


def test_unfinished_chunks_stay_hidden_and_resume_matches_uninterrupted(tmp_path) -> None:
    ids = [9, 4, 6, 1, 3, 8, 7]
    interrupted = open_store(tmp_path / "a.zarr", mode="a")
    run(interrupted, ids, stop_after=2)
    np.testing.assert_array_equal(interrupted.ids("toy", "fc"), [1, 3, 4, 6])
    assert open_features(interrupted, "toy", "fc").shape == (4, 5)
    resumed = run(interrupted, ids)
    assert [t.index for t in resumed.tasks] == [2, 3] and resumed.new_ids.size == 0
    clean = open_store(tmp_path / "b.zarr", mode="a")
    run(clean, ids)
    for name in ("nsd_id", "conv", "fc", "_done/conv", "_done/fc"):
        a, b = interrupted.root[f"toy/{name}"][:], clean.root[f"toy/{name}"][:]
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_append_into_a_partial_last_chunk_keeps_old_rows(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [5, 1, 3])  # chunk 1 holds one row
    before = store.root["toy/fc"][:3].copy()
    plan = run(store, [1, 3, 5, 2, 4], layouts=LAYOUTS[1:])
    assert [(t.index, t.compute_from, dict(t.done)) for t in plan.tasks] == [(1, 3, {"fc": 1}), (2, 4, {"fc": 0})]
    np.testing.assert_array_equal(store.root["toy/fc"][:3], before)
    np.testing.assert_array_equal(store.ids("toy", "fc"), [1, 3, 5, 2, 4])
    np.testing.assert_array_equal(store.ids("toy", "conv"), [1, 3, 5])  # not asked for the new ids
    np.testing.assert_array_equal(open_features(store, "toy", "fc").values, expected([1, 3, 5, 2, 4], LAYOUTS[1]))


def test_new_layer_in_an_existing_group_fills_every_row(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [3, 1, 2], layouts=LAYOUTS[:1])
    extra = LayerLayout("head", (4,), 4, reduce="srp:4", reduce_seed=1)
    plan = run(store, [1, 2, 3], layouts=(LAYOUTS[0], extra))
    assert plan.new_ids.size == 0 and plan.rows_to_write("head") == 3 and plan.rows_to_write("conv") == 0
    np.testing.assert_array_equal(open_features(store, "toy", "head").values, expected([1, 2, 3], extra))


def test_torn_plan_tail_is_cut_and_replanned(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [1, 2, 3])
    ids = store.root["toy/nsd_id"]
    ids.resize((6,))  # a run killed after resizing, before writing the new ids
    np.testing.assert_array_equal(store.planned_ids("toy"), [1, 2, 3])
    run(store, [1, 2, 3, 6, 5])
    np.testing.assert_array_equal(store.ids("toy", "conv"), [1, 2, 3, 5, 6])
    assert store.root["toy/nsd_id"].shape == (5,)


def test_provenance_mismatch_names_every_difference(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [1, 2])
    changed = provenance(
        weights={"weights": "untrained", "sha256": "cd34" * 16},
        dtype="float32",
        preprocessing={**PREPROCESSING, "crop": 7},
    )
    reduced = (LayerLayout("conv", (2, 3, 3), 2, reduce="avgpool"),)
    with pytest.raises(ProvenanceError) as error:
        store.check_provenance("toy", changed, reduced)
    message = str(error.value)
    for difference in (
        "weights sha256 ab12ab12ab12.. != cd34cd34cd34..",
        "dtype float16 != float32",
        "preprocessing.crop 8 != 7",
        "layer conv reduce None != avgpool",
        "n_features 18 != 2",
    ):
        assert difference in message
    assert store.ids("toy", "conv").size == 2  # nothing touched


def test_library_version_change_only_warns(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [1, 2])
    newer = provenance()
    newer["versions"] = {**newer["versions"], "torch": "99.0"}
    with pytest.warns(UserWarning, match="torch .* != 99.0"):
        store.check_provenance("toy", newer, LAYOUTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.check_provenance("toy", provenance(), LAYOUTS)


def test_summary_table(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [4, 5, 6], stop_after=1)
    table = store.summary().set_index("layer")
    assert list(table.index) == ["conv", "fc"]
    assert table.loc["conv", "n_ids"] == 2 and table.loc["fc", "feature_shape"] == (5,)
    assert table.loc["conv", "dtype"] == "float16" and table.loc["conv", "nbytes_stored"] > 0


def test_read_only_and_missing_stores_are_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="No feature store at"):
        open_store(tmp_path / "missing.zarr")
    run(open_store(tmp_path / "s.zarr", mode="a"), [1])
    reader = open_store(tmp_path / "s.zarr")
    with pytest.raises(PermissionError, match="read-only"):
        reader.lock("toy")
    with pytest.raises(KeyError, match="stored: \\['toy'\\]"):
        reader.layers("other")
    with pytest.raises(KeyError, match="stored: \\['conv', 'fc'\\]"):
        open_features(reader, "toy", "nsd_id")
    with pytest.raises(ValueError, match="cannot be stored"):
        run(open_store(tmp_path / "s.zarr", mode="a"), [1], layouts=(LayerLayout("_done", (1,), 1),))


@pytest.mark.parametrize("sharded", [False, True])
def test_store_on_s3(s3_bucket, sharded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if sharded:
        monkeypatch.setattr(layout_module, "INNER_CHUNK_BYTES", TINY_INNER_BYTES)
    url = f"{s3_bucket.url}/features.zarr"
    store = open_store(url, mode="a", storage_options=s3_bucket.storage_options)
    with store.lock("toy"):
        run(store, [8, 3, 5], stop_after=1)
        run(store, [8, 3, 5, 1])
    keys = {o["Key"] for o in s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]}
    assert "features.zarr/toy/conv/c/0/0" in keys and "features.zarr/toy/_done/conv/c/1" in keys
    fc = open_features(url, "toy", "fc", storage_options=s3_bucket.storage_options)
    np.testing.assert_array_equal(fc.sel(nsd_id=[8, 1]).values, expected([8, 1], LAYOUTS[1]))
    shipped = pickle.loads(pickle.dumps(fc))  # as dask ships it to distributed workers
    np.testing.assert_array_equal(shipped.values, expected([3, 5, 8, 1], LAYOUTS[1]))  # rows in order added
    conv = open_features(url, "toy", "conv", storage_options=s3_bucket.storage_options)
    assert store.storage("toy", "conv")["layout"] == ("sharded" if sharded else "plain")
    np.testing.assert_array_equal(conv[:, 4:8].values, expected([3, 5, 8, 1], LAYOUTS[0])[:, 4:8])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(conv)).values, expected([3, 5, 8, 1], LAYOUTS[0]))


def test_wide_layers_are_sharded_and_read_like_plain_ones(tmp_path, tiny_shards, monkeypatch) -> None:
    ids = [40, 7, 13, 2, 29]
    sharded = open_store(tmp_path / "sharded.zarr", mode="a")
    run(sharded, ids)
    assert sharded.storage("toy", "conv") == {"layout": "sharded", "shards": [2, 20], "chunks": [2, 4]}
    assert sharded.storage("toy", "fc") == {"layout": "plain", "chunks": [2, 5]}
    raw = zarr.open_group(str(tmp_path / "sharded.zarr"), mode="r")["toy"]
    assert raw["conv"].shards == (2, 20) and raw["conv"].chunks == (2, 4) and raw["fc"].shards is None
    assert sorted(p.name for p in (tmp_path / "sharded.zarr/toy/conv/c").iterdir()) == [
        "0",
        "1",
        "2",
    ]  # 1 per row chunk
    conv = open_features(sharded, "toy", "conv")
    assert conv.data.chunks == ((5,), (4, 4, 4, 4, 2))  # read tasks: an inner chunk's columns, all rows
    monkeypatch.setattr(reader_module, "READ_TASK_BYTES", 2 * 18 * 2 * 2)  # two full-width bands of 2 rows
    grouped = open_features(sharded, "toy", "conv")
    assert grouped.data.chunks == ((4, 1), (4, 4, 4, 4, 2))  # whole row chunks, two per task
    np.testing.assert_array_equal(grouped.values, expected([2, 7, 13, 29, 40], LAYOUTS[0]))
    np.testing.assert_array_equal(conv.values, expected([2, 7, 13, 29, 40], LAYOUTS[0]))
    np.testing.assert_array_equal(conv.sel(nsd_id=[29, 2]).values, expected([29, 2], LAYOUTS[0]))
    assert sharded.summary().set_index("layer")["storage"].to_dict() == {"conv": "sharded", "fc": "plain"}
    monkeypatch.undo()  # default chunking: an 18-feature layer is plain
    plain = open_store(tmp_path / "plain.zarr", mode="a")
    run(plain, ids)
    assert plain.storage("toy", "conv") == {"layout": "plain", "chunks": [2, 18]}
    np.testing.assert_array_equal(
        open_features(plain, "toy", "conv").values.view(np.uint16), conv.values.view(np.uint16)
    )


def test_column_block_of_a_sharded_layer_reads_only_its_inner_chunks(tmp_path, tiny_shards, monkeypatch) -> None:
    run(open_store(tmp_path / "s.zarr", mode="a"), [40, 7, 13, 2, 29])
    monkeypatch.setattr(reader_module, "LocalStore", CountingLocalStore)
    conv = open_features(tmp_path / "s.zarr", "toy", "conv")
    READS.clear()
    block = conv[:, 8:12].values  # the third inner chunk of every shard
    np.testing.assert_array_equal(block, expected([2, 7, 13, 29, 40], LAYOUTS[0])[:, 8:12])
    layer_reads = [(key, request) for key, request in READS if key.startswith("toy/conv/c/")]
    shards = ["toy/conv/c/0/0", "toy/conv/c/1/0", "toy/conv/c/2/0"]
    index_bytes = 5 * 16 + 4  # (offset, nbytes) uint64 per inner chunk, then a crc32c
    wanted = set()
    for key in shards:  # the shard index read from the file per the zarr v3 spec
        raw = (tmp_path / "s.zarr" / key).read_bytes()
        offset, nbytes = np.frombuffer(raw[-index_bytes:-4], dtype="<u8").reshape(5, 2)[2]
        wanted |= {(key, SuffixByteRequest(index_bytes)), (key, RangeByteRequest(int(offset), int(offset + nbytes)))}
    assert set(layer_reads) == wanted and len(layer_reads) == 2 * len(shards)


def test_append_into_a_partial_last_shard_keeps_old_bytes(tmp_path, tiny_shards) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [5, 1, 3])  # shard 1 holds one finished row
    before = store.root["toy/conv"][:3].copy()
    plan = run(store, [1, 3, 5, 2, 4])
    assert [(t.index, t.compute_from) for t in plan.tasks] == [(1, 3), (2, 4)]
    np.testing.assert_array_equal(store.root["toy/conv"][:3].view(np.uint16), before.view(np.uint16))
    np.testing.assert_array_equal(open_features(store, "toy", "conv").values, expected([1, 3, 5, 2, 4], LAYOUTS[0]))
    interrupted = open_store(tmp_path / "interrupted.zarr", mode="a")
    run(interrupted, [5, 1, 3], stop_after=1)
    run(interrupted, [5, 1, 3])
    run(interrupted, [1, 3, 5, 2, 4], stop_after=1)
    run(interrupted, [1, 3, 5, 2, 4])
    np.testing.assert_array_equal(
        interrupted.root["toy/conv"][:].view(np.uint16), store.root["toy/conv"][:].view(np.uint16)
    )


def test_stores_without_storage_attrs_open_as_plain(tmp_path) -> None:
    store = open_store(tmp_path / "s.zarr", mode="a")
    run(store, [3, 1, 2])
    del store.root["toy/conv"].attrs["storage"]  # as written before the attribute existed
    old = open_store(tmp_path / "s.zarr")
    assert old.storage("toy", "conv") == {"layout": "plain"}
    np.testing.assert_array_equal(open_features(old, "toy", "conv").values, expected([1, 2, 3], LAYOUTS[0]))


def test_store_paths_that_cannot_hold_a_store_are_named(tmp_path, monkeypatch) -> None:
    afile = tmp_path / "features.zarr"
    afile.write_text("not a store")
    for mode in ("r", "a"):
        with pytest.raises(NotADirectoryError, match=f"feature store path {afile} is a file, not a folder"):
            open_store(afile, mode)
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=rf"No feature store at {missing} .*featurestore extract"):
        open_features(tmp_path / "missing", "toy", "conv")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "image.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="data holds other files and is not a feature store"):
        open_store(tmp_path / "data", "a")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["image.png"]


def test_read_only_store_is_refused_before_any_lock_file(tmp_path, monkeypatch) -> None:
    # the tests run as root, for whom chmod a-w changes nothing: the permission check itself is patched
    run(open_store(tmp_path / "s.zarr", mode="a"), [1, 2])
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    locked_out = tmp_path / "s.zarr" / "toy"
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked_out)
    with pytest.raises(
        PermissionError,
        match=rf"^feature store {tmp_path / 's.zarr'} is read-only \(no write "
        rf"permission on {locked_out}\)",
    ):
        open_store(tmp_path / "s.zarr", "a")
    assert open_store(tmp_path / "s.zarr").ids("toy", "conv").size == 2  # reading still works
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
