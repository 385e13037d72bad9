"""timm backbones: weights load through timm, features equal timm's own ``forward_intermediates`` and forward on
real photos, preprocessing is timm's eval transform and is recorded, seeds reproduce, bad names fail clearly,
and ``featurestore extract`` / ``layers`` work end to end with a tiny untrained timm ViT."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import re

import numpy as np
import pytest
import timm
import torch
import zarr
from PIL import Image
from timm.data import create_transform, resolve_data_config

from featurestore.backbones import WeightsError, list_layers, load_backbone, validate_layers
from featurestore.backbones._base import sha256_state_dict
from featurestore.backbones.timm import known_tags
from featurestore.catalog import CatalogError, get_entry
from featurestore.cli import main
from featurestore.extract import extract
from featurestore.store import ProvenanceError, open_features

SEED = 0
VIT_LAYERS = ["blocks.1", "blocks.5", "fc_norm"]


def seeded_model(architecture: str, seed: int = SEED) -> torch.nn.Module:
    """The timm model built right after ``torch.manual_seed(seed)``, the plain PyTorch way."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(architecture, pretrained=False).eval()


@pytest.fixture(scope="module")
def timm_catalog(tmp_path_factory):
    """A user catalog of timm's tiny test models: ``test_vit.file`` / ``test_convnext.file`` (seeded untrained
    state_dict files), ``test_vit.untrained`` (seed 0) and ``test_vit.imagenet`` (its pretrained tag)."""
    folder = tmp_path_factory.mktemp("timm")
    files = {}
    for architecture in ("test_vit", "test_convnext"):
        files[architecture] = folder / f"{architecture}-seed{SEED}.pt"
        torch.save(seeded_model(architecture).state_dict(), files[architecture])
    path = folder / "timm.yaml"
    path.write_text(
        "test_vit.imagenet:\n"
        "  source: timm\n"
        "  architecture: test_vit\n"
        "  weights: r160_in1k\n"
        f"  layers: {json.dumps(VIT_LAYERS)}\n"
        "  reduce: {blocks.1: avgpool, blocks.5: 'srp:64'}\n"
        "  meta: {paper: none, license: none, description: timm test ViT}\n"
        "test_vit.untrained:\n"
        "  extends: test_vit.imagenet\n"
        "  weights: untrained\n"
        "  seed: 0\n"
        "test_vit.file:\n"
        "  extends: test_vit.imagenet\n"
        f'  weights: "file:{files["test_vit"]}"\n'
        "test_convnext.file:\n"
        "  source: timm\n"
        "  architecture: test_convnext\n"
        f'  weights: "file:{files["test_convnext"]}"\n'
        "  layers: [stages.0, stages.3, head.fc]\n",
        encoding="utf-8",
    )
    return {"catalog": path, **files}


@pytest.fixture(scope="module")
def vit(timm_catalog):
    return load_backbone(get_entry("test_vit.file", timm_catalog["catalog"]))


@pytest.fixture(scope="module")
def timm_batch(photos):
    """The photos through timm's own eval transform for test_vit's pretrained cfg."""
    transform = create_transform(**resolve_data_config(model=timm.create_model("test_vit")), is_training=False)
    return torch.stack([transform(photo) for photo in photos])


def test_file_weights_load_through_timm_and_hash_the_file(vit, timm_catalog):
    saved = torch.load(timm_catalog["test_vit"], weights_only=True)
    state = vit.model.state_dict()
    assert list(state) == list(saved) and all(torch.equal(state[key], saved[key]) for key in saved)
    path = timm_catalog["test_vit"]
    assert vit.weights_id == {"weights": f"file:{path}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert not vit.model.training


def test_seeds_reproduce_and_match_plain_torch_seeding(timm_catalog):
    entry = get_entry("test_vit.untrained", timm_catalog["catalog"])
    state = torch.random.get_rng_state()
    first = load_backbone(entry)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    expected = seeded_model("test_vit").state_dict()
    assert first.weights_id == {"weights": "untrained", "sha256": sha256_state_dict(expected)}
    assert load_backbone(entry).weights_id == first.weights_id
    assert load_backbone(entry.with_weights("untrained", seed=1)).weights_id != first.weights_id


def test_transform_is_timms_eval_transform_and_is_recorded(vit, photos, timm_batch):
    batch = torch.stack([vit.transform(photo) for photo in photos])
    assert torch.equal(batch, timm_batch) and batch.shape[1:] == (3, 160, 160)
    again = pickle.loads(pickle.dumps(vit.transform))  # DataLoader workers (spawn) receive it pickled
    assert torch.equal(again(photos[0]), batch[0])
    assert vit.transform(photos[1].convert("L")).shape == batch[1].shape  # grey stimuli get 3 channels
    assert vit.preprocessing == {
        "origin": "timm",
        "image_size": [160, 160],
        "input_size": [3, 160, 160],
        "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "crop_pct": 0.95,
        "crop_mode": "center",
        "path": "pil",  # on the CPU; featurestore.preprocess gives the device version (test_preprocess.py)
    }
    assert json.loads(json.dumps(vit.preprocessing)) == vit.preprocessing
    dinov2 = load_backbone(get_entry("vit_small_patch14_dinov2.untrained"))
    assert dinov2.preprocessing["image_size"] == [518, 518] and dinov2.preprocessing["crop_pct"] == 1.0
    assert dinov2.preprocessing["mean"] == [0.485, 0.456, 0.406]


def test_catalog_preprocessing_overrides_timms(timm_catalog, photos):
    entry = get_entry("test_vit.file", timm_catalog["catalog"])
    override = get_entry("alexnet").preprocessing
    backbone = load_backbone(dataclasses.replace(entry, preprocessing=override))
    assert backbone.preprocessing["origin"] == "catalog" and backbone.preprocessing["image_size"] == [224, 224]
    assert backbone.transform(photos[0]).shape == (3, 224, 224)


def test_vit_blocks_match_forward_intermediates(vit, timm_batch):
    batch = timm_batch[:3]
    ours = vit.extractor([*VIT_LAYERS, "head"])(batch)
    with torch.no_grad():
        blocks = vit.model.forward_intermediates(
            batch, indices=[1, 5], return_prefix_tokens=True, norm=False, output_fmt="NLC", intermediates_only=True
        )
        pooled = vit.model.forward_head(vit.model.forward_features(batch), pre_logits=True)
        logits = vit.model(batch)
    for layer, (patches, prefix) in zip(VIT_LAYERS[:2], blocks, strict=True):
        assert ours[layer].shape == (3, 101, 64)  # (images, class + 10 x 10 patch tokens, width)
        torch.testing.assert_close(ours[layer], torch.cat([prefix, patches], 1))
    torch.testing.assert_close(ours["fc_norm"], pooled)
    torch.testing.assert_close(ours["head"], logits)


def test_convnext_stages_match_forward_intermediates(timm_catalog, timm_batch):
    convnext = load_backbone(get_entry("test_convnext.file", timm_catalog["catalog"]))
    batch = timm_batch[:2]
    layers = list(convnext.entry.layers)
    ours = convnext.extractor(layers)(batch)
    with torch.no_grad():
        stages = convnext.model.forward_intermediates(batch, indices=[0, 3], intermediates_only=True)
        logits = convnext.model(batch)
    torch.testing.assert_close(ours["stages.0"], stages[0])
    torch.testing.assert_close(ours["stages.3"], stages[1])
    torch.testing.assert_close(ours["head.fc"], logits)


def test_layers_listing_and_cli(capsys, timm_catalog):
    """A pretrained entry lists its layers offline (built untrained); the CLI prints timm's nodes."""
    listed = {info.name: info for info in list_layers(get_entry("test_vit.imagenet", timm_catalog["catalog"]))}
    assert {"patch_embed", "blocks.0", "blocks.5", "norm", "fc_norm", "head"} <= set(listed)
    assert listed["blocks.5"].shape == (101, 64) and listed["head"].shape == (1000,)
    assert main(["layers", "test_vit.imagenet", "--catalog", str(timm_catalog["catalog"])]) == 0
    lines = {line[2:].split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["blocks.5"].startswith("* ") and "(101, 64)" in lines["blocks.5"] and "srp:64" in lines["blocks.5"]
    assert not lines["norm"].startswith("*")


def test_bad_architecture_tag_and_layer_name_the_choices(timm_catalog, vit):
    entry = get_entry("test_vit.untrained", timm_catalog["catalog"])
    with pytest.raises(
        CatalogError,
        match=r"entry 'test_vit.untrained': unknown timm architecture 'convnext_bse' "
        r"\(did you mean 'convnext_base'.*\?\); see timm.list_models\(\)",
    ):
        load_backbone(dataclasses.replace(entry, architecture="convnext_bse"))
    with pytest.raises(
        CatalogError,
        match=r"timm architecture 'convnext_base.fb_in1k' carries a pretrained tag; "
        r"write architecture: convnext_base and weights: fb_in1k",
    ):
        load_backbone(dataclasses.replace(entry, architecture="convnext_base.fb_in1k"))
    tags = known_tags("convnext_base")
    assert tags[0] == "fb_in22k_ft_in1k" and "fb_in1k" in tags
    with pytest.raises(
        CatalogError,
        match=r"timm convnext_base has no weights 'fb_in1kk' \(did you mean 'fb_in1k'"
        r".*\); available: \['fb_in22k_ft_in1k', 'fb_in1k', .*'untrained', "
        r"'file:<path>'\]",
    ):
        load_backbone(get_entry("convnext_base.fb_in22k_ft_in1k").with_weights("fb_in1kk"))
    with pytest.raises(
        CatalogError,
        match=r"backbone 'test_vit.file' has no layer 'blocks.6'; close matches: "
        r"\[.*'blocks.5'.*\]; \d+ layers, see `featurestore layers test_vit.file`",
    ):
        validate_layers(vit, ["blocks.6"])


def test_offline_pretrained_and_bad_files_raise_weights_errors(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", offline)
    with pytest.raises(
        WeightsError,
        match=r"could not load timm pretrained weights vit_small_patch14_dinov2.lvd142m "
        r"\(OSError: network is unreachable\)\. Offline\? Download https://"
        r"huggingface.co/timm/vit_small_patch14_dinov2.lvd142m or https://\S+"
        r"dinov2_vits14_pretrain.pth elsewhere .*weights: \"file:",
    ):
        load_backbone(get_entry("vit_small_patch14_dinov2.lvd142m"))
    with pytest.raises(WeightsError, match=r"give the entry the 'fb_in1k' preprocessing"):
        load_backbone(get_entry("convnext_base.fb_in22k_ft_in1k").with_weights("fb_in1k"))
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    entry = get_entry("vit_small_patch14_dinov2.lvd142m")
    with pytest.raises(
        WeightsError,
        match=r"(?s)could not load timm weights file .*bad.pt \(RuntimeError: .*"
        r"Missing key",
    ):
        load_backbone(entry.with_weights(f"file:{bad}"))
    with pytest.raises(WeightsError, match=r"could not load timm weights file .*missing.pt"):
        load_backbone(entry.with_weights(f"file:{tmp_path / 'missing.pt'}"))


def test_extract_end_to_end_and_preprocessing_is_in_the_cache_key(capsys, tmp_path, algonauts_dir, timm_catalog):
    store = tmp_path / "features.zarr"
    catalog = timm_catalog["catalog"]
    common = [
        "--images",
        algonauts_dir,
        "--store",
        store,
        "--chunk-rows",
        "4",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--subjects",
        "2",
        "--device",
        "cpu",
    ]
    argv = ["extract", "--backbone", "test_vit.untrained", "--catalog", catalog, *common]
    assert main([str(arg) for arg in argv]) == 0
    capsys.readouterr()
    backbone = load_backbone(get_entry("test_vit.untrained", catalog))
    features = {layer: open_features(store, "test_vit.untrained", layer) for layer in VIT_LAYERS}
    ids = features["fc_norm"]["nsd_id"].values
    assert sorted(ids.tolist()) == [7, 845, 5001, 40000, 61000]
    assert features["blocks.1"].sizes["feature"] == 64 and features["blocks.5"].sizes["feature"] == 64  # reduced
    paths = {int(p.stem.split("nsd-")[1]): p for p in algonauts_dir.glob("subj02/*/*/*.png")}
    batch = torch.stack([backbone.transform(Image.open(paths[int(i)])) for i in ids])
    expected = backbone.extractor(["fc_norm", "blocks.1"])(batch)
    np.testing.assert_allclose(features["fc_norm"].values, expected["fc_norm"].numpy(), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(features["blocks.1"].values, expected["blocks.1"].mean(1).numpy(), rtol=1e-2, atol=1e-2)
    override = tmp_path / "override.yaml"  # the same entry with other normalisation: stale features are refused
    override.write_text(
        "test_vit.untrained:\n  extends: test_vit.imagenet\n  weights: untrained\n  seed: 0\n"
        "  preprocessing: {resize: 168, crop: 160, interpolation: bicubic, mean: [0.5, 0.5, 0.5], "
        "std: [0.25, 0.25, 0.25]}\n",
        encoding="utf-8",
    )
    argv = ["extract", "--backbone", "test_vit.untrained", "--catalog", catalog, override, *common]
    assert main([str(arg) for arg in argv]) == 1
    err = capsys.readouterr().err
    assert "store provenance differs" in err and "preprocessing.std [0.5, 0.5, 0.5] != [0.25, 0.25, 0.25]" in err


def test_token_layers_extract_are_recorded_and_listed(capsys, tmp_path, algonauts_dir, timm_catalog):
    """`tokens:` end to end: stored rows are the selected tokens, the selection is in the provenance and the layer
    layout, a changed selection is refused (the cache key), and `featurestore layers` shows it."""
    catalog = tmp_path / "tokens.yaml"
    catalog.write_text(
        "test_vit.tokens:\n  extends: test_vit.untrained\n  layers: [blocks.1, blocks.3]\n"
        "  reduce: {}\n  tokens: {blocks.1: cls, blocks.3: mean}\n",
        encoding="utf-8",
    )
    catalogs = [timm_catalog["catalog"], catalog]
    store = tmp_path / "features.zarr"
    run = {"catalog": catalogs, "subjects": [2], "chunk_rows": 4, "batch_size": 2, "num_workers": 0}
    extract("test_vit.tokens", algonauts_dir, store, progress=False, device="cpu", **run)
    backbone = load_backbone(get_entry("test_vit.tokens", catalogs))
    features = {layer: open_features(store, "test_vit.tokens", layer) for layer in ("blocks.1", "blocks.3")}
    ids = features["blocks.1"]["nsd_id"].values
    paths = {int(p.stem.split("nsd-")[1]): p for p in algonauts_dir.glob("subj02/*/*/*.png")}
    batch = torch.stack([backbone.transform(Image.open(paths[int(i)])) for i in ids])
    expected = backbone.extractor(["blocks.1", "blocks.3"])(batch)  # equal to hooked blocks: test_backbones.py
    for layer, values in features.items():
        assert values.sizes["feature"] == 64  # the width of test_vit: one token (or the mean token) per image
        np.testing.assert_allclose(values.values, expected[layer].numpy(), rtol=1e-2, atol=1e-2)
    group = zarr.open_group(store, mode="r")["test_vit.tokens"]
    assert group.attrs["provenance"]["entry"]["tokens"] == {"blocks.1": "cls", "blocks.3": "mean"}
    assert group["blocks.3"].attrs["tokens"] == "mean"
    changed = tmp_path / "changed.yaml"
    changed.write_text(catalog.read_text(encoding="utf-8").replace("blocks.3: mean", "blocks.3: cls"), encoding="utf-8")
    with pytest.raises(ProvenanceError, match=r"layer blocks\.3 tokens mean != cls"):
        extract(
            "test_vit.tokens",
            algonauts_dir,
            store,
            progress=False,
            device="cpu",
            **{**run, "catalog": [timm_catalog["catalog"], changed]},
        )
    assert main(["layers", "test_vit.tokens", "--catalog", *map(str, catalogs)]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"\* blocks\.1 +\(64,\) +tokens=cls", listing) and "token map = ViT tokens" in listing
    assert re.search(r"  blocks\.2 +\(101, 64\) +token map", listing)
