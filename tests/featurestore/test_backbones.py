"""Backbones: weights load as torchvision / open_clip load them, extractors return what their own tools return on
real photos, seeds reproduce, in-place nodes are flagged and read before the change, bad names fail clearly."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle

import open_clip
import pytest
import torch
import torchvision.models as tvm
from torchvision.models.feature_extraction import create_feature_extractor

from featurestore.backbones import ADAPTERS, WeightsError, list_layers, load_backbone, validate_layers
from featurestore.backbones._base import sha256_state_dict
from featurestore.backbones.open_clip import EMBEDDING
from featurestore.catalog import SOURCES, CatalogEntry, CatalogError, get_entry, load_catalog


def assert_same_tensors(state_a, state_b):
    assert list(state_a) == list(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


@pytest.fixture(scope="module")
def alexnet(test_catalog_file):
    return load_backbone(get_entry("alexnet.testfile", test_catalog_file))


@pytest.fixture(scope="module")
def alexnet_reference(untrained_weights):
    """Plain torchvision AlexNet with the same file's weights."""
    model = tvm.alexnet(weights=None)
    model.load_state_dict(torch.load(untrained_weights["alexnet"], weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def imagenet_batch(photos):
    """The photos through torchvision's own AlexNet IMAGENET1K_V1 eval transform (metadata only, no download)."""
    return torch.stack([tvm.AlexNet_Weights.IMAGENET1K_V1.transforms()(photo) for photo in photos])


@pytest.fixture(scope="module")
def vit(test_catalog_file):
    return load_backbone(get_entry("ViT-B-32.testfile", test_catalog_file))


@pytest.fixture(scope="module")
def untrained():
    """architecture entry name -> its backbone with seed-0 random weights, built once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_backbone(get_entry(name).with_weights("untrained", seed=0))
        return cache[name]

    return get


def test_every_source_has_an_adapter():
    assert set(ADAPTERS) == set(SOURCES)


def test_state_dict_hash_depends_on_keys_order_shapes_dtypes_and_values():
    base = {"a": torch.arange(6.0), "b": torch.ones(2, dtype=torch.int64)}
    variants = [
        {"b": base["b"], "a": base["a"]},
        {"a": base["a"].reshape(2, 3), "b": base["b"]},
        {"a": base["a"].double(), "b": base["b"]},
        {"a": base["a"] + 1e-6, "b": base["b"]},
        {"c": base["a"], "b": base["b"]},
    ]
    digests = {sha256_state_dict(state) for state in [base, *variants]}
    assert len(digests) == 1 + len(variants)
    assert sha256_state_dict({"a": torch.arange(6.0).reshape(2, 3).t()}) == sha256_state_dict(
        {"a": torch.arange(6.0).reshape(2, 3).t().contiguous()}
    )  # layout does not matter, values do


def test_transform_is_torchvisions_eval_transform_and_pickles(alexnet, photos, imagenet_batch):
    batch = torch.stack([alexnet.transform(photo) for photo in photos])
    assert torch.equal(batch, imagenet_batch)
    again = pickle.loads(pickle.dumps(alexnet.transform))  # DataLoader workers (spawn) receive it pickled
    assert torch.equal(again(photos[0]), batch[0])
    assert alexnet.transform(photos[1].convert("L")).shape == batch[1].shape  # grey stimuli get 3 channels
    assert alexnet.preprocessing["image_size"] == [224, 224]


def test_file_weights_load_exactly_and_hash_the_file(alexnet, alexnet_reference, untrained_weights):
    assert_same_tensors(alexnet.model.state_dict(), alexnet_reference.state_dict())
    path = untrained_weights["alexnet"]
    assert alexnet.weights_id == {"weights": f"file:{path}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert not alexnet.model.training


def test_torchvision_extractor_matches_create_feature_extractor(alexnet, alexnet_reference, imagenet_batch):
    layers = [*alexnet.entry.layers, "features", "classifier.6"]
    ours = alexnet.extractor(layers)(imagenet_batch)
    assert list(ours) == layers
    with torch.no_grad():
        reference = create_feature_extractor(alexnet_reference, return_nodes=list(alexnet.entry.layers))(imagenet_batch)
        whole_features = create_feature_extractor(alexnet_reference, return_nodes=["features"])(imagenet_batch)
        logits = alexnet_reference(imagenet_batch)
    for layer in alexnet.entry.layers:
        torch.testing.assert_close(ours[layer], reference[layer])
        assert ours[layer].shape[0] == len(imagenet_batch)
    torch.testing.assert_close(ours["features"], whole_features["features"])
    torch.testing.assert_close(ours["classifier.6"], logits)


def test_inplace_nodes_are_flagged_and_read_before_the_change(alexnet, alexnet_reference, imagenet_batch):
    """A node followed by ReLU(inplace=True) is flagged; torchvision's own extractor then returns the post-ReLU
    tensor when later nodes are read too, while ours returns the node's own output whatever else is asked."""
    batch = imagenet_batch[:2]
    expected = set()  # modules of a Sequential whose next module is ReLU(inplace=True)
    for part in ("features", "classifier"):
        following = list(getattr(alexnet_reference, part))[1:]
        expected |= {
            f"{part}.{i}" for i, after in enumerate(following) if isinstance(after, torch.nn.ReLU) and after.inplace
        }
    assert (
        expected
        == alexnet.inplace_layers()
        == {"features.0", "features.3", "features.6", "features.8", "features.10", "classifier.1", "classifier.4"}
    )
    nodes = [f"features.{i}" for i in range(13)]
    ours = alexnet.extractor(nodes)(batch)
    with torch.no_grad():
        theirs = create_feature_extractor(alexnet_reference, return_nodes=nodes)(batch)
        for i, node in enumerate(nodes):
            own_output = alexnet_reference.features[: i + 1](batch.clone())  # eager, stops right after node i
            torch.testing.assert_close(ours[node], own_output)
            assert torch.equal(theirs[node], own_output) != (node in expected), node
    alone = alexnet.extractor(["features.0"])(batch)["features.0"]
    assert torch.equal(alone, ours["features.0"]) and bool((alone < 0).any())


def test_layer_listing_has_module_names_shapes_and_inplace_flags(alexnet, untrained, imagenet_batch):
    info = {layer.name: layer for layer in alexnet.layer_info}
    assert list(info)[:3] == ["features.0", "features.1", "features.2"]
    assert info["features.2"].shape == (64, 27, 27) and info["classifier.6"].shape == (1000,)
    assert info["features"].shape == info["features.12"].shape
    resnet = untrained("resnet50")
    names = resnet.layer_names()
    assert {"layer1", "layer4", "avgpool", "fc", "layer1.0.add", "layer1.0.relu_2"} <= set(names)
    assert names.index("layer1.2.relu_2") < names.index("layer1") < names.index("layer2.0.conv1")
    assert {"bn1", "layer1.0.bn1", "layer1.0.add"} <= resnet.inplace_layers()  # ReLU(inplace=True) follows
    assert "layer1" not in resnet.inplace_layers()
    batch = torch.nn.functional.interpolate(imagenet_batch[:2], size=112, mode="area")  # photos, less compute
    layers = ["layer1", "layer4", "avgpool", "fc"]
    ours = resnet.extractor(layers)(batch)
    with torch.no_grad():
        theirs = create_feature_extractor(resnet.model, return_nodes=layers)(batch)
        logits = resnet.model(batch)
    for layer in layers:
        torch.testing.assert_close(ours[layer], theirs[layer])
    torch.testing.assert_close(ours["fc"], logits)


def test_seeds_reproduce_and_match_plain_torch_seeding(alexnet, untrained_weights):
    entry = get_entry("alexnet.untrained")
    state = torch.random.get_rng_state()
    first = load_backbone(entry)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    # seed 0 gives the weights of `torch.manual_seed(0); alexnet()` built independently by conftest
    assert_same_tensors(first.model.state_dict(), torch.load(untrained_weights["alexnet"], weights_only=True))
    again = sha256_state_dict(torch.load(untrained_weights["alexnet"], weights_only=True))
    assert first.weights_id == {"weights": "untrained", "sha256": again}
    other = load_backbone(entry.with_weights("untrained", seed=1))
    assert other.weights_id["sha256"] != first.weights_id["sha256"]
    assert first.weights_id["sha256"] != alexnet.weights_id["sha256"]  # same tensors, but a file hashes the file


def test_open_clip_embedding_and_blocks_match_open_clip(vit, photos, untrained_weights):
    assert_same_tensors(vit.model.state_dict(), torch.load(untrained_weights["ViT-B-32"], weights_only=True))
    path = untrained_weights["ViT-B-32"]
    assert vit.weights_id["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    reference_transform = open_clip.image_transform(
        224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
    )
    batch = torch.stack([vit.transform(photo) for photo in photos])
    assert torch.equal(batch, torch.stack([reference_transform(photo) for photo in photos]))
    assert vit.preprocessing["image_size"] == [224, 224] and vit.preprocessing["interpolation"] == "bicubic"
    assert vit.preprocessing["mean"] == list(open_clip.OPENAI_DATASET_MEAN)

    layers = ["transformer.resblocks.3", "transformer.resblocks.11", EMBEDDING, "conv1"]
    batch = batch[:3]
    ours = vit.extractor(layers)(batch)
    with torch.no_grad():
        embedding = vit.model.encode_image(batch)
        blocks = vit.model.visual.forward_intermediates(
            batch, indices=[3, 11], output_fmt="NLC", output_extra_tokens=True, intermediates_only=True
        )
    torch.testing.assert_close(ours[EMBEDDING], embedding)
    for index, layer in enumerate(layers[:2]):
        tokens = torch.cat([blocks["image_intermediates_prefix"][index], blocks["image_intermediates"][index]], 1)
        assert ours[layer].shape == (3, 50, 768)  # batch first: (images, class + 49 patch tokens, width)
        torch.testing.assert_close(ours[layer], tokens)
    assert ours["conv1"].shape == (3, 768, 7, 7)


def test_open_clip_seeded_untrained_matches_plain_torch_seeding(untrained_weights):
    backbone = load_backbone(get_entry("ViT-B-32.untrained"))
    assert backbone.weights_id["weights"] == "untrained"
    assert_same_tensors(backbone.model.state_dict(), torch.load(untrained_weights["ViT-B-32"], weights_only=True))


def test_open_clip_hooks_copy_outputs_changed_in_place(untrained, imagenet_batch):
    """RN50's batch norms feed ReLU(inplace=True): flagged, and read as the batch norm's own output."""
    rn50 = untrained("RN50.openai")
    assert {"bn1", "layer1.0.bn1", "layer1.0.bn3"} <= rn50.inplace_layers()
    assert rn50.layer_names()[-1] == EMBEDDING
    batch = imagenet_batch[:2]
    ours = rn50.extractor(["bn1", "layer1", EMBEDDING])(batch)
    visual = rn50.model.visual
    with torch.no_grad():
        torch.testing.assert_close(ours["bn1"], visual.bn1(visual.conv1(batch)))
        torch.testing.assert_close(ours[EMBEDDING], rn50.model.encode_image(batch))
    assert bool((ours["bn1"] < 0).any()) and ours["layer1"].shape == (2, 256, 56, 56)


def test_builtin_default_layers_and_reductions_exist(alexnet, vit, untrained):
    loaded = {backbone.entry.architecture: backbone for backbone in (alexnet, vit)}
    for entry in load_catalog().values():
        if entry.weights == "untrained":
            continue  # same architecture and layers as the entry it extends (test_catalog)
        names = set((loaded.get(entry.architecture) or untrained(entry.name)).layer_names())
        assert set(entry.layers) <= names, entry.name
        assert set(entry.reduce) <= names, entry.name


def test_list_layers_and_validate_layers(vit):
    listed = list_layers(get_entry("alexnet"))  # a pretrained entry: listed from its architecture, offline
    assert [layer.name for layer in listed][:2] == ["features.0", "features.1"] and listed[0].inplace
    validate_layers(get_entry("alexnet"), ["features.12", "classifier.5"])
    with pytest.raises(
        CatalogError,
        match=r"backbone 'alexnet' has no layer 'features.13'; close matches: "
        r"\[.*'features.12'.*\]; valid layers: \['features.0', 'features.1',",
    ):
        validate_layers(get_entry("alexnet"), ["features.2", "features.13"])
    with pytest.raises(
        CatalogError,
        match=r"backbone 'ViT-B-32.testfile' has no layer 'transformer.resblocks.12'; "
        r"close matches: \[.*'transformer.resblocks.1'.*\]; "
        r"\d+ layers, see `featurestore layers ViT-B-32.testfile`",
    ):
        vit.extractor(["transformer.resblocks.12"])
    with pytest.raises(CatalogError, match=r"backbone 'ViT-B-32.testfile': no layers requested"):
        validate_layers(vit, [])


def test_bad_architecture_and_tag_name_the_choices():
    entry = get_entry("alexnet")
    with pytest.raises(
        CatalogError,
        match=r"entry 'alexnet': unknown torchvision architecture 'alexnett' "
        r"\(did you mean 'alexnet'\?\)",
    ):
        load_backbone(dataclasses.replace(entry, architecture="alexnett"))
    with pytest.raises(
        CatalogError,
        match=r"torchvision alexnet has no weights 'IMAGENET1K_V2' \(did you mean "
        r"'IMAGENET1K_V1'\?\); available: \['IMAGENET1K_V1', 'untrained'",
    ):
        load_backbone(entry.with_weights("IMAGENET1K_V2"))
    with pytest.raises(
        CatalogError,
        match=r"open_clip ViT-B-32-quickgelu has no weights 'openia' \(did you mean "
        r"'openai'\?\)",
    ):
        load_backbone(get_entry("ViT-B-32.openai").with_weights("openia"))


def test_offline_pretrained_weights_fail_with_a_file_hint(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        WeightsError,
        match=r"could not get torchvision weights AlexNet_Weights.IMAGENET1K_V1 from "
        r"https://\S+alexnet-owt-7be5be79.pth \(OSError: network is unreachable\)"
        r".*weights: \"file:/path/to/alexnet-owt-7be5be79.pth\"",
    ):
        load_backbone(get_entry("alexnet"))
    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(
        WeightsError,
        match=r"could not load open_clip pretrained weights ViT-B-32-quickgelu 'openai'"
        r".*Offline\? Download https://\S+ViT-B-32.pt .*weights: \"file:",
    ):
        load_backbone(get_entry("ViT-B-32.openai"))
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match=r"bad.pt is not a state_dict of torchvision alexnet"):
        load_backbone(get_entry("alexnet").with_weights(f"file:{bad}"))
    with pytest.raises(WeightsError, match=r"cannot read weights file .*missing.pt"):
        load_backbone(get_entry("alexnet").with_weights(f"file:{tmp_path / 'missing.pt'}"))


# --- token layers: the catalog's `tokens:` against the block outputs read by a forward hook in the test -------------


def token_entry(name: str, source: str, architecture: str, tokens: dict[str, str], **fields) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        source=source,
        architecture=architecture,
        weights="untrained",
        seed=0,
        layers=list(tokens),
        tokens=tokens,
        **fields,
    )


def hooked_outputs(model: torch.nn.Module, modules: dict[str, torch.nn.Module], run) -> dict[str, torch.Tensor]:
    """Each named module's output, read by a plain forward hook while `run()` calls the model."""
    captured = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach().clone()))
        for name, module in modules.items()
    ]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return captured


@pytest.mark.parametrize("architecture", ["test_vit", "test_vit2"])  # a class token; one register token, no class
def test_timm_tokens_equal_the_hooked_block_outputs(photos, architecture):
    import timm

    has_cls = architecture == "test_vit"
    tokens = {"blocks.1": "cls" if has_cls else "mean", "blocks.3": "mean", "blocks.5": "all"}
    backbone = load_backbone(token_entry("t", "timm", architecture, tokens, reduce={"blocks.5": "srp:64"}))
    images = torch.stack([backbone.transform(photo) for photo in photos[:3]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(architecture, pretrained=False).eval()  # the same seeded weights, built here
    blocks = hooked_outputs(model, {name: model.blocks[int(name[-1])] for name in tokens}, lambda: model(images))
    n_prefix = 1  # timm's test_vit: the class token; test_vit2: one register token
    expected = {
        "blocks.1": blocks["blocks.1"][:, 0] if has_cls else blocks["blocks.1"][:, n_prefix:].mean(1),
        "blocks.3": blocks["blocks.3"][:, n_prefix:].mean(1),
        "blocks.5": blocks["blocks.5"],
    }
    outputs = backbone.extractor(list(tokens))(images)
    shapes = {info.name: (info.shape, info.tokens, info.token_map) for info in backbone.layer_info}
    for layer, mode in tokens.items():
        torch.testing.assert_close(outputs[layer], expected[layer], rtol=1e-5, atol=1e-5)
        assert shapes[layer] == (tuple(expected[layer].shape[1:]), mode, True)
    assert backbone.token_layout.has_cls is has_cls and backbone.token_layout.n_patches == 100


def test_open_clip_tokens_equal_the_hooked_resblock_outputs(photos):
    tokens = {"transformer.resblocks.2": "cls", "transformer.resblocks.5": "mean"}
    backbone = load_backbone(dataclasses.replace(get_entry("ViT-B-32.untrained"), layers=list(tokens), tokens=tokens))
    images = torch.stack([backbone.transform(photo) for photo in photos[:2]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    resblocks = model.visual.transformer.resblocks
    blocks = hooked_outputs(
        model, {name: resblocks[int(name[-1])] for name in tokens}, lambda: model.encode_image(images)
    )
    outputs = backbone.extractor(list(tokens))(images)
    torch.testing.assert_close(outputs["transformer.resblocks.2"], blocks["transformer.resblocks.2"][:, 0])
    torch.testing.assert_close(outputs["transformer.resblocks.5"], blocks["transformer.resblocks.5"][:, 1:].mean(1))
    assert backbone.token_layout.n_patches == 49  # (224 / 32) ** 2


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            token_entry(
                "conv",
                "torchvision",
                "alexnet",
                {"features.2": "mean"},
                preprocessing=get_entry("alexnet").preprocessing,
            ),
            r"entry 'conv': key 'tokens': layer 'features.2' is not a token layer \(output shape \(64, 27, 27\); "
            r"this model has no token layers\)",
        ),
        (
            token_entry("vit", "timm", "test_vit", {"fc_norm": "cls"}),
            r"entry 'vit': key 'tokens': layer 'fc_norm' is not a token layer \(output shape \(64,\); token layers "
            r"give \(101 tokens, width\)\)",
        ),
        (
            token_entry("reg", "timm", "test_vit2", {"blocks.1": "cls"}),
            r"entry 'reg': key 'tokens': layer 'blocks.1': 'cls' but the model has no class token",
        ),
        (token_entry("typo", "timm", "test_vit", {"block.1": "cls"}), r"backbone 'typo' has no layer 'block.1'"),
    ],
    ids=["convnet", "not a token map", "no class token", "unknown layer"],
)
def test_tokens_on_a_layer_without_them_name_the_entry_and_the_layer(entry, message):
    with pytest.raises(CatalogError, match=message):
        list_layers(entry)
