"""Fixtures of the featurestore tests: a real S3-compatible server (moto) on 127.0.0.1 with a fresh bucket per
test, two tiny Algonauts subject folders of real photos, and a small catalog entry using local weights."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Start moto's threaded S3 server on a free localhost port; yield its endpoint URL; stop it after."""
    threaded = pytest.importorskip("moto.moto_server.threaded_moto_server")
    server = threaded.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """An empty bucket on the moto server: ``.url`` (s3://bucket), ``.storage_options``, ``.client`` (boto3)."""
    boto3 = pytest.importorskip("boto3")
    for name, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    bucket = f"features-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    storage_options = {
        "endpoint_url": moto_server,
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "use_listings_cache": False,
    }
    try:
        yield SimpleNamespace(url=f"s3://{bucket}", storage_options=storage_options, client=client, name=bucket)
    finally:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        while listed:
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})
            listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        client.delete_bucket(Bucket=bucket)


# subject -> (training ids, test ids); subjects share 845, 40000 (training) and 5001 (test), as NSD subjects do
SUBJECT_IMAGES = {1: ([13, 845, 2950, 40000, 72999], [5001]), 2: ([7, 845, 40000, 61000], [5001])}
IMAGE_SIZE = 72


def _write_subject(folder: Path, split: str, ids: list[int], image_of: dict[int, Image.Image]) -> None:
    """PNGs named like the challenge (``train-0001_nsd-00013.png``), rows 1-based in the order given."""
    parts = {"train": ("training_split", "training_images"), "test": ("test_split", "test_images")}[split]
    target = folder.joinpath(*parts)
    target.mkdir(parents=True)
    for row, nsd_id in enumerate(ids, start=1):
        image_of[nsd_id].save(target / f"{split}-{row:04d}_nsd-{nsd_id:05d}.png")


@pytest.fixture(scope="session")
def algonauts_dir(tmp_path_factory: pytest.TempPathFactory, photos: list[Image.Image]) -> Path:
    """Two Algonauts subject folders of tiny real photos; shared NSD ids hold identical pixels."""
    root = tmp_path_factory.mktemp("algonauts")
    all_ids = sorted({i for train, test in SUBJECT_IMAGES.values() for i in train + test})
    image_of = {}
    for index, nsd_id in enumerate(all_ids):
        photo = photos[index % len(photos)].resize((IMAGE_SIZE, IMAGE_SIZE))
        image_of[nsd_id] = photo if index < len(photos) else photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for subject, (train, test) in SUBJECT_IMAGES.items():
        _write_subject(root / f"subj{subject:02d}", "train", train, image_of)
        _write_subject(root / f"subj{subject:02d}", "test", test, image_of)
    return root


TINY_PREPROCESSING = {
    "resize": 64,
    "crop": 64,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory: pytest.TempPathFactory, test_catalog_file: Path) -> list[Path]:
    """Catalog files giving ``alexnet.tiny``: the seeded untrained AlexNet file at 64 px with four layers, one
    average-pooled and one randomly projected (``srp:64``, seed 3)."""
    path = tmp_path_factory.mktemp("tiny-catalog") / "tiny.yaml"
    path.write_text(
        "alexnet.tiny:\n"
        "  extends: alexnet.testfile\n"
        f"  preprocessing: {json.dumps(TINY_PREPROCESSING)}\n"
        "  layers: [features.2, features.5, features.12, classifier.5]\n"
        "  reduce: {features.5: avgpool, features.12: 'srp:64'}\n"
        "  reduce_seed: 3\n",
        encoding="utf-8",
    )
    return [test_catalog_file, path]


SMALL_STORE_BACKBONE = "alexnet.tiny"
SMALL_STORE_LAYERS = ["features.2", "classifier.5"]


@pytest.fixture(scope="session")
def small_store_master(tmp_path_factory: pytest.TempPathFactory, algonauts_dir: Path, tiny_catalog: list[Path]) -> Path:
    """One extraction of subject 2's 5 images (two layers of ``alexnet.tiny``, chunks of 4 rows); copy, never edit."""
    from featurestore.extract import extract

    store = tmp_path_factory.mktemp("small-store") / "features.zarr"
    extract(
        SMALL_STORE_BACKBONE,
        algonauts_dir,
        store,
        layers=SMALL_STORE_LAYERS,
        catalog=tiny_catalog,
        subjects=[2],
        chunk_rows=4,
        batch_size=2,
        num_workers=0,
        progress=False,
        device="cpu",
    )
    return store


@pytest.fixture
def small_store(tmp_path: Path, small_store_master: Path) -> Path:
    """A fresh copy of ``small_store_master`` that the test may change."""
    copy = tmp_path / "features.zarr"
    shutil.copytree(small_store_master, copy)
    return copy
