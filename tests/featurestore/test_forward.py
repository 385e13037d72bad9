"""The forward loop on the device path: decoding workers hand over uint8 pixels, the backbone's device transform
prepares them, and the stored features equal torchvision's own feature extractor on the same prepared batch; they
stay within the transform's tolerance of the PIL path, and the path is part of the group's recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import zarr
from PIL import Image
from torchvision import transforms as T
from torchvision.models.feature_extraction import create_feature_extractor

from featurestore.cli import main
from featurestore.extract import extract
from featurestore.preprocess import DeviceTransform, decode_uint8
from featurestore.store import ProvenanceError, open_features

from .conftest import TINY_PREPROCESSING

BACKBONE = "alexnet.tiny"
LAYERS = ["features.2", "classifier.5"]
RUN = {"chunk_rows": 3, "batch_size": 2, "num_workers": 0, "progress": False, "device": "cpu", "layers": LAYERS}
PREP = TINY_PREPROCESSING


def first_files(data_dir: Path) -> list[Path]:
    """One image file per NSD id, in ascending id order (file names end in ``_nsd-<id>.png``)."""
    by_id: dict[int, Path] = {}
    for path in sorted(data_dir.rglob("*.png")):
        by_id.setdefault(int(path.stem.rsplit("-", 1)[1]), path)
    return [by_id[nsd_id] for nsd_id in sorted(by_id)]


def torchvision_features(weights: Path, batch: torch.Tensor) -> dict[str, np.ndarray]:
    model = torchvision.models.alexnet()
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        out = create_feature_extractor(model.eval(), return_nodes=LAYERS)(batch)
    return {layer: out[layer].flatten(1).numpy() for layer in LAYERS}


def stored(store: Path) -> dict[str, np.ndarray]:
    return {layer: open_features(store, BACKBONE, layer).values.astype(np.float32) for layer in LAYERS}


@pytest.fixture(scope="module")
def device_store(tmp_path_factory, algonauts_dir, tiny_catalog) -> Path:
    store = tmp_path_factory.mktemp("device") / "features.zarr"
    report = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, preprocess_on="device", **RUN)
    assert report.rows_computed == 8
    return store


def test_device_path_features_equal_torchvision_on_the_device_prepared_batch(
    device_store, algonauts_dir, untrained_weights
):
    photos = [Image.open(path).convert("RGB") for path in first_files(algonauts_dir)]
    prepared = DeviceTransform(PREP["resize"], "bilinear", (PREP["crop"],) * 2, PREP["mean"], PREP["std"])(
        [decode_uint8(photo) for photo in photos]
    )
    expected = torchvision_features(untrained_weights["alexnet"], prepared)
    pil = T.Compose(
        [T.Resize(PREP["resize"]), T.CenterCrop(PREP["crop"]), T.ToTensor(), T.Normalize(PREP["mean"], PREP["std"])]
    )
    with_pil = torchvision_features(untrained_weights["alexnet"], torch.stack([pil(photo) for photo in photos]))
    for layer, values in stored(device_store).items():
        scale = np.abs(expected[layer]).max()
        np.testing.assert_allclose(values, expected[layer], rtol=2e-3, atol=2e-3 * scale)  # float16 storage
        # the PIL path differs by the transform's tolerance only: measured up to 0.5 % of the largest value
        np.testing.assert_allclose(values, with_pil[layer], rtol=0, atol=0.01 * scale)
        assert np.corrcoef(values.ravel(), with_pil[layer].ravel())[0, 1] > 0.999


def test_the_path_is_recorded_and_a_group_refuses_the_other(capsys, device_store, algonauts_dir, tiny_catalog):
    provenance = zarr.open_group(device_store, mode="r")[BACKBONE].attrs["provenance"]
    assert provenance["preprocessing"]["path"] == "device"
    with pytest.raises(ProvenanceError, match=r"preprocessing\.path device != pil"):
        extract(BACKBONE, algonauts_dir, device_store, catalog=tiny_catalog, preprocess_on="pil", **RUN)
    argv = ["extract", "--backbone", BACKBONE, "--images", algonauts_dir, "--store", device_store, "--catalog",
            *tiny_catalog, "--device", "cpu", "--workers", "0", "--no-progress", "--preprocess-on", "pil",
            "--layers", *LAYERS]  # fmt: skip
    assert main([str(arg) for arg in argv]) == 1
    error = capsys.readouterr().err
    assert "preprocessing.path device != pil" in error and len(error.strip().splitlines()) == 1


def test_a_group_keeps_its_path_and_groups_made_before_it_existed_resume_with_pil(
    tmp_path, algonauts_dir, tiny_catalog
):
    store = tmp_path / "old.zarr"
    extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, subjects=[2], **RUN)  # the CPU default: PIL
    group = zarr.open_group(store, mode="r+")[BACKBONE]
    provenance = group.attrs["provenance"]
    assert provenance["preprocessing"].pop("path") == "pil"
    group.attrs["provenance"] = provenance  # as written before the device path existed
    with pytest.raises(ProvenanceError, match=r"preprocessing\.path pil != device"):
        extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, preprocess_on="device", **RUN)
    report = extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, **RUN)  # subject 1's new ids, with PIL
    assert report.rows_computed == 3


def test_decoding_workers_hand_over_uint8_to_the_device_path(tmp_path, device_store, algonauts_dir, tiny_catalog):
    store = tmp_path / "workers.zarr"
    run = {**RUN, "num_workers": 1}
    extract(BACKBONE, algonauts_dir, store, catalog=tiny_catalog, preprocess_on="device", **run)
    for layer, values in stored(store).items():
        np.testing.assert_array_equal(values, stored(device_store)[layer])
