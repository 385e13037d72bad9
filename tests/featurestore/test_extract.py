"""The extraction engine on real photos against torchvision / open_clip references; resume after SIGKILL; S3."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torchvision
import zarr
from PIL import Image
from torchvision import transforms as T
from torchvision.models.feature_extraction import create_feature_extractor

import featurestore.backbones
from featurestore.extract import NonFiniteFeaturesError, default_num_workers, extract
from featurestore.reduction import make_reducer
from featurestore.stimuli import StimulusError
from featurestore.store import ProvenanceError, StoreLockedError, open_features, open_store

from .conftest import TINY_PREPROCESSING

extract_module = sys.modules["featurestore.extract"]
BACKBONE = "alexnet.tiny"
LAYERS = ["features.2", "features.5", "features.12", "classifier.5"]
RUN = {"chunk_rows": 3, "batch_size": 2, "num_workers": 0, "progress": False, "device": "cpu"}
NAME = re.compile(r"(train|test)-\d{4}_nsd-(\d{5})\.png")


def files_by_id(data_dir: Path) -> dict[int, list[Path]]:
    """NSD id -> image files (ascending ids), parsed here from the challenge file names."""
    found: dict[int, list[Path]] = {}
    for path in sorted(data_dir.rglob("*.png")):
        found.setdefault(int(NAME.fullmatch(path.name).group(2)), []).append(path)
    return dict(sorted(found.items()))


def reference_alexnet(weights: Path, paths: list[Path]) -> dict[str, np.ndarray]:
    """torchvision's own create_feature_extractor on the photos, preprocessed with torchvision transforms."""
    model = torchvision.models.alexnet()
    model.load_state_dict(torch.load(weights, weights_only=True))
    prep = TINY_PREPROCESSING
    transform = T.Compose(
        [T.Resize(prep["resize"]), T.CenterCrop(prep["crop"]), T.ToTensor(), T.Normalize(prep["mean"], prep["std"])]
    )
    batch = torch.stack([transform(Image.open(path).convert("RGB")) for path in paths])
    with torch.no_grad():
        out = create_feature_extractor(model.eval(), return_nodes=LAYERS)(batch)
    projection = make_reducer("srp:64", (256, 1, 1), seed=3).matrix()  # its law is checked against sklearn
    return {
        "features.2": out["features.2"].flatten(1).numpy(),
        "features.5": out["features.5"].mean(dim=(2, 3)).numpy(),
        "features.12": (out["features.12"].flatten(1) @ projection).numpy(),
        "classifier.5": out["classifier.5"].numpy(),
    }


def assert_float16_close(stored: np.ndarray, reference: np.ndarray) -> None:
    """Stored float16 rows equal a float32 reference up to float16 rounding."""
    assert stored.dtype == np.float16
    scale = np.abs(reference).max()
    np.testing.assert_allclose(stored.astype(np.float32), reference, rtol=2e-3, atol=2e-3 * scale)


def stored_arrays(store: Path | str, **options) -> dict[str, np.ndarray]:
    """Every array of the backbone group, raw (ids, layer rows, per-chunk markers)."""
    group = zarr.open_group(store, mode="r", **options)[BACKBONE]
    names = ["nsd_id", *LAYERS, *(f"_done/{layer}" for layer in LAYERS)]
    return {name: group[name][:] for name in names}


def stored_files(store: Path) -> dict[str, bytes]:
    """Every file of a local store, by relative path (to assert that a refused run changed nothing)."""
    return {str(path.relative_to(store)): path.read_bytes() for path in sorted(store.rglob("*")) if path.is_file()}


def assert_same_store(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Identical bytes, NaN padding included."""
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name].view(np.uint8), b[name].view(np.uint8), err_msg=name)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, algonauts_dir, tiny_catalog) -> tuple[Path, object]:
    """One uninterrupted extraction of both subjects (the reference run of this module)."""
    store = tmp_path_factory.mktemp("extracted") / "features.zarr"
    report = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN)
    return store, report


def test_features_equal_torchvision_and_rows_follow_file_names(extracted, algonauts_dir, untrained_weights) -> None:
    store, report = extracted
    files = files_by_id(algonauts_dir)
    assert report.rows_computed == len(files) == 8  # shared images went through the model once
    assert report.chunks_written == 3
    reference = reference_alexnet(untrained_weights["alexnet"], [paths[0] for paths in files.values()])
    for layer in LAYERS:
        features = open_features(store, BACKBONE, layer)
        np.testing.assert_array_equal(features.nsd_id, sorted(files))
        assert_float16_close(features.values, reference[layer])
    fc = open_features(store, BACKBONE, "classifier.5")
    subject2 = [
        int(NAME.fullmatch(p.name).group(2))
        for p in sorted((algonauts_dir / "subj02/training_split/training_images").iterdir())
    ]
    rows = [list(files).index(i) for i in subject2]
    assert_float16_close(fc.sel(nsd_id=subject2).values, reference["classifier.5"][rows])
    layout = open_store(store).layout(BACKBONE, "features.5")
    assert layout.feature_shape == (192, 3, 3) and layout.reduce == "avgpool" and layout.n_features == 192
    assert layout.reduce_seed is None and open_store(store).layout(BACKBONE, "features.12").reduce_seed == 3
    provenance = open_store(store).provenance(BACKBONE)
    assert provenance["weights"]["sha256"] == featurestore.backbones._base.sha256_file(untrained_weights["alexnet"])
    assert provenance["preprocessing"]["crop"] == 64 and provenance["dtype"] == "float16"


def test_open_clip_embedding_equals_encode_image(tmp_path, photos, untrained_weights, test_catalog_file) -> None:
    folder = tmp_path / "subj01/training_split/training_images"
    folder.mkdir(parents=True)
    for row, (nsd_id, photo) in enumerate(zip([4, 20], photos), start=1):
        photo.resize((96, 80)).save(folder / f"train-{row:04d}_nsd-{nsd_id:05d}.png")
    report = extract(
        "ViT-B-32.testfile",
        tmp_path / "subj01",
        tmp_path / "s.zarr",
        layers=["embedding"],
        catalog=[test_catalog_file],
        **RUN,
    )
    assert report.rows_computed == 2
    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-32-quickgelu", pretrained=str(untrained_weights["ViT-B-32"])
    )
    batch = torch.stack([preprocess(Image.open(path)) for path in sorted(folder.iterdir())])
    with torch.no_grad():
        reference = model.eval().encode_image(batch).numpy()
    embedding = open_features(tmp_path / "s.zarr", "ViT-B-32.testfile", "embedding")
    np.testing.assert_array_equal(embedding.nsd_id, [4, 20])
    assert_float16_close(embedding.values, reference)


def test_rerun_loads_no_model_and_new_subject_adds_only_new_ids(
    tmp_path, extracted, algonauts_dir, tiny_catalog, monkeypatch
) -> None:
    store, run = tmp_path / "s.zarr", {**RUN, "chunk_rows": 4}
    first = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, subjects=[1], **run)
    assert first.rows_computed == 6  # chunks of rows 0-3 and 4-5
    second = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, subjects=[2], **run)
    assert list(second.plan.rows.new_ids) == [7, 61000]  # 845, 40000 and 5001 are stored already
    assert second.rows_computed == 2 and [t.index for t in second.plan.rows.tasks] == [1]  # fills the last chunk
    with monkeypatch.context() as patched:
        patched.setattr(featurestore.backbones, "load_backbone", lambda *a, **k: pytest.fail("model loaded"))
        again = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **run)
    assert again.rows_computed == 0 and again.chunks_written == 0
    # rows keep the order they were added in; values match the one-run store id by id (up to float16 rounding:
    # other chunking, so other batches)
    np.testing.assert_array_equal(
        open_store(store).ids(BACKBONE, "features.2"), [13, 845, 2950, 5001, 40000, 72999, 7, 61000]
    )
    one_run = open_features(extracted[0], BACKBONE, "classifier.5")
    two_runs = open_features(store, BACKBONE, "classifier.5")
    assert_float16_close(two_runs.sel(nsd_id=one_run.nsd_id).values, one_run.values.astype(np.float32))


KILLABLE = textwrap.dedent("""
    import sys, time
    from featurestore.store import FeatureStore
    write_chunk = FeatureStore.write_chunk

    def slow_write_chunk(*args, **kwargs):  # a slow disk, so the kill lands mid-run
        write_chunk(*args, **kwargs)
        time.sleep(0.3)

    FeatureStore.write_chunk = slow_write_chunk
    from featurestore.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def extract_cli_args(images: Path, store: Path, catalog) -> list[str]:
    """``featurestore extract`` of the tiny backbone with RUN's settings, as command-line words."""
    words = f"extract --backbone {BACKBONE} --chunk-rows 3 --batch-size 2 --workers 0 --no-progress --device cpu"
    return [*words.split(), "--images", str(images), "--store", str(store), "--catalog", *map(str, catalog)]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, extracted, algonauts_dir, tiny_catalog) -> None:
    store = tmp_path / "s.zarr"
    command = [
        sys.executable,
        "-c",
        KILLABLE,
        *extract_cli_args(algonauts_dir, store, tiny_catalog),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first_chunk_done = store / BACKBONE / "_done" / LAYERS[-1] / "c" / "0"  # the chunk's last layer marked
    deadline = time.monotonic() + 240
    while not first_chunk_done.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    _, stderr = child.communicate()
    assert child.returncode == -signal.SIGKILL, stderr.decode()
    killed = open_store(store)
    assert 0 < killed.ids(BACKBONE, LAYERS[-1]).size < 8  # killed mid-run, finished chunks visible
    least_done = np.min([killed.done_counts(BACKBONE, layer) for layer in LAYERS], axis=0)
    pending_rows = sum(size - done for size, done in zip([3, 3, 2], least_done))
    resumed = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN)
    assert resumed.plan.rows.new_ids.size == 0 and resumed.rows_computed == pending_rows < 8
    assert_same_store(stored_arrays(store), stored_arrays(extracted[0]))
    assert extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN).rows_computed == 0


def test_new_layer_joins_an_existing_group_via_worker_processes(
    tmp_path, extracted, algonauts_dir, tiny_catalog
) -> None:
    store = tmp_path / "s.zarr"
    extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, layers=["classifier.5"], **RUN)
    before = zarr.open_group(store, mode="r")[f"{BACKBONE}/classifier.5"][:]
    report = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **{**RUN, "num_workers": 1})  # spawn
    assert report.rows_computed == 8
    assert report.plan.rows.rows_to_write("classifier.5") == 0 and report.plan.rows.rows_to_write("features.2") == 8
    after = stored_arrays(store)
    np.testing.assert_array_equal(after["classifier.5"].view(np.uint16), before.view(np.uint16))
    assert_same_store(after, stored_arrays(extracted[0]))


@pytest.mark.parametrize(
    ("cores", "cpu_workers", "cuda_workers"), [(1, 0, 0), (2, 1, 1), (8, 4, 7), (16, 4, 15), (64, 4, 16)]
)
def test_default_decoders_leave_the_cpu_to_the_forward_pass_and_feed_a_gpu_from_every_core(
    monkeypatch, cores, cpu_workers, cuda_workers
) -> None:
    """With many images pending: the CPU keeps cores for the forward pass, a GPU is fed from every core but one."""
    monkeypatch.setattr(extract_module, "usable_cores", lambda: cores)
    assert default_num_workers(torch.device("cpu"), 100_000) == cpu_workers
    assert default_num_workers(torch.device("cuda"), 100_000) == cuda_workers


@pytest.mark.parametrize("cores", [2, 8, 64])
def test_small_runs_decode_inline_where_a_worker_costs_more_than_it_saves(monkeypatch, cores) -> None:
    """Measured on 2 cores: one layer of 340 images took 7.9 s inline and 12.5 s with one worker; the break-even
    was about 1,330 images (bench/bench_workers.py)."""
    monkeypatch.setattr(extract_module, "usable_cores", lambda: cores)
    for pending in (1, 340, 1000, extract_module.CPU_MIN_PENDING - 1):
        assert default_num_workers(torch.device("cpu"), pending) == 0
    assert default_num_workers(torch.device("cpu"), extract_module.CPU_MIN_PENDING) == min(4, cores - 1)
    workers = min(16, cores - 1)
    saved = (
        extract_module.DECODE_S + extract_module.MAIN_S - max(extract_module.MAIN_S, extract_module.DECODE_S / workers)
    )
    break_even = extract_module.WORKER_START_S / saved  # 2 cores: about 2,500 images; 64 cores: about 860
    assert default_num_workers(torch.device("cuda"), int(break_even) - 1) == 0
    assert default_num_workers(torch.device("cuda"), int(break_even) + 1) == workers


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, algonauts_dir, tiny_catalog) -> None:
    out = io.StringIO()
    report = extract(BACKBONE, algonauts_dir, tmp_path / "s.zarr", catalog=tiny_catalog, dry_run=True, out=out, **RUN)
    text = out.getvalue()
    assert not (tmp_path / "s.zarr").exists() and report.rows_computed == 0 and report.dry_run
    assert "8 new ids" in text and "uncompressed upper bound" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] in ([x] for x in LAYERS)}
    assert rows["features.2"][1] == "8" and "(64, 7, 7)" in " ".join(rows["features.2"])
    assert "(3, 3136)" in " ".join(rows["features.2"]) and "float16" in rows["features.2"]
    assert "(3, 192)" in " ".join(rows["features.5"]) and "avgpool" in rows["features.5"]
    assert report.plan.table().set_index("layer").loc["classifier.5", "est_bytes"] == 8 * 4096 * 2


def test_other_recipe_is_refused(tmp_path, algonauts_dir, tiny_catalog) -> None:
    store = tmp_path / "s.zarr"
    extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, subjects=[2], **RUN)
    with pytest.raises(ProvenanceError, match="dtype float16 != float32"):
        extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, dtype="float32", **RUN)
    other = tmp_path / "other.yaml"
    other.write_text(
        json.dumps(
            {
                BACKBONE: {
                    "extends": "alexnet",
                    "weights": "untrained",
                    "seed": 1,
                    "preprocessing": TINY_PREPROCESSING,
                    "layers": LAYERS,
                    "reduce": {"features.5": "srp:16"},
                }
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(ProvenanceError) as error:
        extract(BACKBONE, algonauts_dir, store, catalog=[*tiny_catalog, other], subjects=[2], **RUN)
    assert re.search(r"weights sha256 [0-9a-f]{12}\.\. != [0-9a-f]{12}\.\.", str(error.value))
    assert "layer features.5 n_features 192 != 16" in str(error.value)
    assert "layer features.5 reduce avgpool != srp:16" in str(error.value)
    assert open_store(store).ids(BACKBONE, "features.2").size == 5


def test_catalog_dtype_is_checked_like_the_dtype_argument(tmp_path, small_store, algonauts_dir, tiny_catalog) -> None:
    before = stored_files(small_store)
    float32 = tmp_path / "float32.yaml"
    float32.write_text(
        f"{BACKBONE}:\n  extends: alexnet.testfile\n  preprocessing: {json.dumps(TINY_PREPROCESSING)}\n"
        f"  layers: {json.dumps(LAYERS)}\n  reduce: {{features.5: avgpool, features.12: 'srp:64'}}\n"
        "  reduce_seed: 3\n  dtype: float32\n",
        encoding="utf-8",
    )
    with pytest.raises(ProvenanceError, match="dtype float16 != float32"):
        extract(BACKBONE, algonauts_dir, small_store, catalog=[*tiny_catalog, float32], **RUN)
    assert stored_files(small_store) == before
    # a group made with an explicit dtype keeps it on reruns from the unchanged catalog
    store = tmp_path / "s32.zarr"
    extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, dtype="float32", subjects=[2], **RUN)
    report = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN)
    assert report.plan.dtype == "float32" and report.rows_computed == 3


def test_float16_overflow_names_the_layer(tmp_path, algonauts_dir, tiny_catalog, untrained_weights) -> None:
    state = torch.load(untrained_weights["alexnet"], weights_only=True)
    loud = tmp_path / "loud.pt"
    torch.save({key: value * 40 if key.endswith("weight") else value for key, value in state.items()}, loud)
    catalog = tmp_path / "loud.yaml"
    catalog.write_text(f'loud:\n  extends: {BACKBONE}\n  weights: "file:{loud}"\n', encoding="utf-8")
    with pytest.raises(
        NonFiniteFeaturesError,
        match=r"backbone 'loud' layer '[a-z]+\.\d+': values up to .* overflow float16 .*dtype='float32'",
    ):
        extract("loud", algonauts_dir, tmp_path / "s.zarr", catalog=[*tiny_catalog, catalog], **RUN)
    assert open_store(tmp_path / "s.zarr").ids("loud", "classifier.5").size == 0
    report = extract(
        "loud", algonauts_dir, tmp_path / "s32.zarr", catalog=[*tiny_catalog, catalog], dtype="float32", **RUN
    )
    assert np.isfinite(open_features(tmp_path / "s32.zarr", "loud", "classifier.5").values).all()
    assert report.rows_computed == 8


def test_second_writer_is_refused(tmp_path, algonauts_dir, tiny_catalog) -> None:
    store = tmp_path / "s.zarr"
    with open_store(store, mode="a").lock(BACKBONE):
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN)


def test_store_on_s3_end_to_end(s3_bucket, extracted, algonauts_dir, tiny_catalog) -> None:
    url = f"{s3_bucket.url}/features.zarr"
    options = s3_bucket.storage_options
    report = extract(BACKBONE, algonauts_dir, url, catalog=tiny_catalog, storage_options=options, **RUN)
    assert report.rows_computed == 8
    assert (
        extract(BACKBONE, algonauts_dir, url, catalog=tiny_catalog, storage_options=options, **RUN).rows_computed == 0
    )
    remote = open_features(url, BACKBONE, "features.2", storage_options=options)
    local = open_features(extracted[0], BACKBONE, "features.2")
    np.testing.assert_array_equal(remote.sel(nsd_id=[61000, 13]).values, local.sel(nsd_id=[61000, 13]).values)
    assert_same_store(stored_arrays(url, storage_options=options), stored_arrays(extracted[0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float16_autocast_matches_torchvision(tmp_path, algonauts_dir, tiny_catalog, untrained_weights) -> None:
    report = extract(BACKBONE, algonauts_dir, tmp_path / "s.zarr", catalog=tiny_catalog, **{**RUN, "device": "cuda"})
    assert report.rows_computed == 8
    files = files_by_id(algonauts_dir)
    reference = reference_alexnet(untrained_weights["alexnet"], [paths[0] for paths in files.values()])
    for layer in LAYERS:  # float16 compute: looser than the CPU test's float16 storage rounding
        stored = open_features(tmp_path / "s.zarr", BACKBONE, layer).values.astype(np.float32)
        np.testing.assert_allclose(stored, reference[layer], rtol=2e-2, atol=2e-2 * np.abs(reference[layer]).max())


def copy_with_bad_images(algonauts_dir: Path, target: Path, bad: dict[int, bytes]) -> Path:
    """A copy of the Algonauts folders where every file of the NSD ids in ``bad`` holds the given bytes."""
    shutil.copytree(algonauts_dir, target)
    for nsd_id, content in bad.items():
        for path in target.rglob(f"*_nsd-{nsd_id:05d}.png"):
            path.write_bytes(content)
    return target


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize(
    ("content", "reason"), [(b"", "the file is empty"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot read image")]
)
def test_unreadable_image_stops_with_one_line_naming_the_file(
    tmp_path, algonauts_dir, tiny_catalog, workers, content, reason
) -> None:
    data = copy_with_bad_images(algonauts_dir, tmp_path / "data", {2950: content})  # subject 1 only, row 2
    with pytest.raises(StimulusError) as error:
        extract(BACKBONE, data, tmp_path / "s.zarr", catalog=tiny_catalog, **{**RUN, "num_workers": workers})
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message and "BytesIO" not in message
    bad = data / "subj01/training_split/training_images/train-0003_nsd-02950.png"
    assert f"cannot read image {bad}" in message
    assert reason in message and "--skip-bad-images" in message
    assert open_store(tmp_path / "s.zarr").ids(BACKBONE, "features.2").tolist() == [7, 13, 845]  # chunk 0


def test_skip_bad_images_hides_their_rows_and_resumes_identically(
    tmp_path, extracted, algonauts_dir, tiny_catalog
) -> None:
    data = copy_with_bad_images(algonauts_dir, tmp_path / "data", {845: b"", 61000: b"GIF89a broken"})
    store = tmp_path / "s.zarr"
    with pytest.raises(StimulusError, match="nsd-00845.png: the file is empty"):  # without the flag: stop
        extract(BACKBONE, data, store, catalog=tiny_catalog, **RUN)
    report = extract(BACKBONE, data, store, catalog=tiny_catalog, skip_bad_images=True, **RUN)  # resumes
    assert [image["nsd_id"] for image in report.skipped_images] == [845, 61000]
    assert "nsd-61000.png: not an image format PIL can decode" in report.skipped_images[1]["reason"]
    good = [13, 2950, 5001, 7, 40000, 72999]  # rows: 7 13 845 | 2950 5001 40000 | 61000 72999
    reference = open_features(extracted[0], BACKBONE, "features.2")
    for layer in LAYERS:
        features = open_features(store, BACKBONE, layer)
        assert sorted(features.nsd_id.values.tolist()) == sorted(good)
        assert np.isfinite(features.values).all()
    np.testing.assert_array_equal(
        open_features(store, BACKBONE, "features.2").sel(nsd_id=good).values, reference.sel(nsd_id=good).values
    )
    assert open_store(store).summary()["n_ids"].tolist() == [6] * len(LAYERS)
    assert [image["nsd_id"] for image in open_store(store).skipped_images(BACKBONE)] == [845, 61000]
    assert extract(BACKBONE, data, store, catalog=tiny_catalog, skip_bad_images=True, **RUN).rows_computed == 0
    # one run with the flag from scratch gives the same store, byte for byte
    again = tmp_path / "again.zarr"
    extract(BACKBONE, data, again, catalog=tiny_catalog, skip_bad_images=True, **RUN)
    assert_same_store(stored_arrays(again), stored_arrays(store))
    assert open_store(again).skipped_images(BACKBONE) == open_store(store).skipped_images(BACKBONE)


def children_of(pid: int) -> set[int]:
    """Pids of the live child processes of ``pid`` (from /proc; zombies count as gone)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_of_a_killed_extraction_exit_with_it(tmp_path, algonauts_dir, tiny_catalog) -> None:
    command = [
        sys.executable,
        "-c",
        KILLABLE,
        "extract",
        "--backbone",
        BACKBONE,
        "--images",
        str(algonauts_dir),
        "--store",
        str(tmp_path / "s.zarr"),
        "--catalog",
        *map(str, tiny_catalog),
        "--chunk-rows",
        "1",
        "--batch-size",
        "1",
        "--workers",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_chunk_done = tmp_path / "s.zarr" / BACKBONE / "_done" / LAYERS[-1] / "c" / "0"
    deadline = time.monotonic() + 240
    while not first_chunk_done.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = children_of(child.pid)
    assert child.poll() is None and len(workers) >= 2, child.stderr.read().decode()
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)
    child.stderr.close()


KILL_AT_WRITE = textwrap.dedent("""
    import os, signal, sys
    import zarr
    kind, nth = sys.argv[1], int(sys.argv[2])
    setitem = zarr.Array.__setitem__
    seen = 0

    def setitem_then_die(self, key, value):  # SIGKILL just before the nth write of a marker / of layer data
        global seen
        is_marker = "/_done/" in self.path
        if is_marker == (kind == "marker") and not self.path.endswith("/nsd_id"):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        setitem(self, key, value)

    zarr.Array.__setitem__ = setitem_then_die
    from featurestore.cli import main
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.parametrize(
    ("kind", "nth"),
    [("marker", 1), ("marker", 6), ("data", 9)],
    ids=["chunk0-data-written-marker-not", "chunk1-two-layers-marked", "chunk2-before-data"],
)
def test_kill_inside_a_chunk_write_then_resume_equals_uninterrupted_run(
    tmp_path, extracted, algonauts_dir, tiny_catalog, kind, nth
) -> None:
    store = tmp_path / "s.zarr"
    command = [
        sys.executable,
        "-c",
        KILL_AT_WRITE,
        kind,
        str(nth),
        *extract_cli_args(algonauts_dir, store, tiny_catalog),
    ]
    killed = subprocess.run(command, capture_output=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    markers = sum(int(np.count_nonzero(open_store(store).done_counts(BACKBONE, layer))) for layer in LAYERS)
    assert markers == (nth - 1 if kind == "marker" else 8)  # 4 layers x 3 chunks = 12 markers in a full run
    resumed = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN)
    assert resumed.plan.rows.new_ids.size == 0 and resumed.rows_computed > 0
    assert_same_store(stored_arrays(store), stored_arrays(extracted[0]))
    for layer in LAYERS:
        np.testing.assert_array_equal(
            open_features(store, BACKBONE, layer).values.view(np.uint16),
            open_features(extracted[0], BACKBONE, layer).values.view(np.uint16),
        )
