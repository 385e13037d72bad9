"""The catalog: the built-in zoo validates and agrees with torchvision / open_clip metadata; user files add,
override and extend entries; every invalid file fails with a message naming file, entry, key and choices."""

from __future__ import annotations

import json
import pickle
import re
import textwrap
from pathlib import Path

import open_clip
import pytest
import timm
import torchvision.models as tvm

from featurestore.catalog import SOURCES, CatalogEntry, CatalogError, Preprocessing, get_entry, load_catalog

REQUIRED_ENTRIES = [
    "alexnet",
    "alexnet.untrained",
    "vgg19_bn",
    "resnet50",
    "RN50.openai",
    "ViT-B-32.openai",
    "ViT-B-32.untrained",
    "vit_small_patch14_dinov2.lvd142m",
    "vit_small_patch14_dinov2.untrained",
    "vit_base_patch14_dinov2.lvd142m",
    "convnext_base.fb_in22k_ft_in1k",
]


def write(folder: Path, text: str, name: str = "user.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_builtin_catalog_has_the_zoo_and_round_trips_to_json():
    catalog = load_catalog()
    assert set(REQUIRED_ENTRIES) <= set(catalog)
    for name, entry in catalog.items():
        assert entry.name == name and entry.source in SOURCES
        assert set(entry.meta) >= {"paper", "license", "description"}
        assert json.loads(json.dumps(entry.to_dict())) == entry.to_dict()
        assert pickle.loads(pickle.dumps(entry)) == entry
        assert get_entry(name) == entry
    assert catalog["alexnet"].layers == (
        "features.2",
        "features.5",
        "features.7",
        "features.9",
        "features.12",
        "classifier.2",
        "classifier.5",
    )
    assert catalog["alexnet"].preprocessing == Preprocessing(
        resize=256, crop=224, interpolation="bilinear", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )


@pytest.mark.parametrize("name", ["alexnet.untrained", "ViT-B-32.untrained"])
def test_untrained_twins_copy_their_parent_with_seed_zero(name):
    catalog = load_catalog()
    twin, parent = catalog[name], catalog[name.replace(".untrained", "" if name.startswith("alexnet") else ".openai")]
    assert (twin.weights, twin.seed) == ("untrained", 0)
    assert (twin.architecture, twin.layers, twin.reduce, twin.preprocessing) == (
        parent.architecture,
        parent.layers,
        parent.reduce,
        parent.preprocessing,
    )
    assert twin.meta["paper"] == parent.meta["paper"] and twin.meta["description"] != parent.meta["description"]


def test_torchvision_entries_match_their_weights_metadata():
    """The catalog's preprocessing is what torchvision's own `weights.transforms()` does for that tag."""
    tagged = [e for e in load_catalog().values() if e.source == "torchvision" and e.weights != "untrained"]
    assert tagged
    for entry in tagged:
        assert entry.architecture in tvm.list_models()
        reference = tvm.get_model_weights(entry.architecture)[entry.weights].transforms()
        prep = entry.preprocessing
        assert ([prep.resize], [prep.crop]) == (reference.resize_size, reference.crop_size), entry.name
        assert (list(prep.mean), list(prep.std)) == (reference.mean, reference.std), entry.name
        assert prep.interpolation == reference.interpolation.value, entry.name


def test_open_clip_entries_name_real_tags_with_matching_activation():
    """Tags exist, and the architecture's QuickGELU setting is the one the weights were trained with."""
    tagged = [e for e in load_catalog().values() if e.source == "open_clip" and e.weights != "untrained"]
    assert tagged
    for entry in tagged:
        assert entry.preprocessing is None  # the model's own transform
        assert entry.weights in open_clip.list_pretrained_tags_by_model(entry.architecture), entry.name
        config = open_clip.get_model_config(entry.architecture)
        tag = open_clip.get_pretrained_cfg(entry.architecture, entry.weights)
        assert config.get("quick_gelu", False) == tag.get("quick_gelu", False), entry.name


def test_timm_entries_name_real_architectures_and_tags():
    """timm entries use timm's own preprocessing, name a `timm.list_models()` architecture and one of its tags
    (the entry name is timm's `<architecture>.<tag>`), and the untrained twin keeps its parent's recipe."""
    from featurestore.backbones.timm import known_tags

    catalog = load_catalog()
    tagged = [e for e in catalog.values() if e.source == "timm" and e.weights != "untrained"]
    assert tagged
    for entry in tagged:
        assert entry.preprocessing is None and entry.architecture in timm.list_models(), entry.name
        assert entry.weights in known_tags(entry.architecture), entry.name
        assert entry.name == f"{entry.architecture}.{entry.weights}"
    twin, parent = catalog["vit_small_patch14_dinov2.untrained"], catalog["vit_small_patch14_dinov2.lvd142m"]
    assert (twin.weights, twin.seed) == ("untrained", 0) and parent.weights == known_tags(parent.architecture)[0]
    assert (twin.architecture, twin.layers, twin.reduce) == (parent.architecture, parent.layers, parent.reduce)


def test_user_file_adds_and_overrides_and_children_see_the_override(tmp_path):
    user = write(
        tmp_path,
        """\
        alexnet:
          source: torchvision
          architecture: alexnet
          weights: IMAGENET1K_V1
          preprocessing: {resize: 256, crop: 224, interpolation: bilinear, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
          layers: [features.12]
          dtype: float32
        mine: {extends: resnet50, layers: [layer4]}
        """,
    )
    catalog = load_catalog([user])
    assert catalog["alexnet"].layers == ("features.12",) and catalog["alexnet"].dtype == "float32"
    assert catalog["alexnet.untrained"].layers == ("features.12",)  # extends the overriding entry
    assert catalog["mine"].layers == ("layer4",) and catalog["mine"].architecture == "resnet50"
    assert load_catalog(str(user)) == catalog  # a single path works too
    assert load_catalog()["alexnet"].dtype == "float16"  # the built-in file is untouched


def test_extends_makes_short_twins(tmp_path):
    (tmp_path / "weights").mkdir()
    user = write(
        tmp_path,
        """\
        alexnet.seed1: {extends: alexnet.untrained, seed: 1}
        alexnet.local:
          extends: alexnet.untrained
          weights: file:weights/alexnet.pt
          meta: {note: "local copy"}
        alexnet.local.fp32: {extends: alexnet.local, dtype: float32}
        """,
    )
    catalog = load_catalog([user])
    assert (catalog["alexnet.seed1"].weights, catalog["alexnet.seed1"].seed) == ("untrained", 1)
    local = catalog["alexnet.local"]
    assert local.seed is None  # a child that sets weights does not inherit the seed
    assert local.weights_file == (tmp_path / "weights" / "alexnet.pt").resolve()  # relative to the YAML file
    assert local.meta["note"] == "local copy" and local.meta["paper"] == catalog["alexnet"].meta["paper"]
    assert catalog["alexnet.local.fp32"].weights == local.weights and catalog["alexnet.local.fp32"].dtype == "float32"


def test_with_weights_returns_a_validated_copy(tmp_path):
    entry = get_entry("alexnet.untrained")
    local = entry.with_weights(f"file:{tmp_path}/w.pt")
    assert (local.weights, local.seed, entry.weights) == (f"file:{tmp_path}/w.pt", None, "untrained")
    assert local.layers == entry.layers
    assert get_entry("alexnet").with_weights("untrained", seed=3).seed == 3
    with pytest.raises(CatalogError, match=r"entry 'alexnet': key 'seed': weights 'untrained' needs an integer seed"):
        get_entry("alexnet").with_weights("untrained")


def test_entries_are_hashable_and_frozen():
    entry = get_entry("alexnet")
    assert hash(entry) == hash(get_entry("alexnet"))
    with pytest.raises(AttributeError):
        entry.layers = ()


BAD_ENTRIES = {
    "unknown key": (
        "layer: [features.2]",
        r"entry 'bad': unknown key 'layer' \(did you mean 'layers'\?\); valid keys: \['extends'",
    ),
    "missing key": (
        "weights: untrained\nseed: 0",
        r"entry 'bad': missing key 'layers' \(required: \['source', 'architecture', 'weights', 'layers'\]",
    ),
    "wrong type": (
        "layers: features.2",
        r"entry 'bad': key 'layers': expected a list of layer names, got 'features.2'",
    ),
    "seed type": ("seed: zero", r"entry 'bad': key 'seed': expected an integer or null, got 'zero'"),
    "unknown source": (
        "source: torchvison",
        r"entry 'bad': key 'source': expected one of \['torchvision', 'open_clip', 'timm'\], "
        r"got 'torchvison' \(did you mean 'torchvision'\?\)",
    ),
    "untrained without seed": ("seed: null", r"entry 'bad': key 'seed': weights 'untrained' needs an integer seed"),
    "seed with a tag": (
        "weights: IMAGENET1K_V1",
        r"entry 'bad': key 'seed': a seed is only used with weights 'untrained', got seed 0",
    ),
    "bad reduce": (
        "reduce: {features.2: 'srp:0'}",
        r"entry 'bad': key 'reduce': layer 'features.2': expected 'avgpool' or 'srp:<k>'.*got 'srp:0'",
    ),
    "unknown tokens": (
        "tokens: {features.2: first}",
        r"entry 'bad': key 'tokens': layer 'features.2': expected one of \['cls', 'mean', 'all'\], got 'first'",
    ),
    "all tokens without a reduce": (
        "tokens: {features.2: all}",
        r"entry 'bad': key 'tokens': layer 'features.2': 'all' keeps every token: give the layer a reduce too",
    ),
    "bad dtype": (
        "dtype: float64",
        r"entry 'bad': key 'dtype': expected one of \['float16', 'float32'\], got 'float64'",
    ),
    "bad interpolation": (
        "preprocessing: {interpolation: lanczos, mean: [0, 0, 0], std: [1, 1, 1]}",
        r"entry 'bad': preprocessing 'interpolation': expected one of \['bilinear', 'bicubic', "
        r"'nearest'\], got 'lanczos'",
    ),
    "bad mean": (
        "preprocessing: {interpolation: bilinear, mean: [0, 0], std: [1, 1, 1]}",
        r"entry 'bad': preprocessing 'mean': expected 3 numbers \(R, G, B\), got \(0, 0\)",
    ),
    "preprocessing missing": (
        "preprocessing: null",
        r"entry 'bad': key 'preprocessing': required for source 'torchvision'",
    ),
    "meta not strings": (
        "meta: {year: 2012}",
        r"entry 'bad': key 'meta': expected a mapping of strings to strings \(quote numbers\)",
    ),
    "unknown parent": (
        "extends: alexnett",
        r"entry 'bad': key 'extends': unknown entry 'alexnett' \(did you mean 'alexnet'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_invalid_entry_names_file_entry_key_and_choices(tmp_path, case):
    change, message = BAD_ENTRIES[case]
    fields = {
        "source": "torchvision",
        "architecture": "alexnet",
        "weights": "untrained",
        "seed": "0",
        "preprocessing": "{interpolation: bilinear, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}",
        "layers": "[features.2]",
    }
    for line in change.splitlines():
        key, value = line.split(": ", 1)
        fields[key] = value
    if case in ("unknown key", "missing key"):
        del fields["layers"]
    body = "\n".join(f"  {key}: {value}" for key, value in fields.items())
    path = write(tmp_path, f"bad:\n{body}\n")
    with pytest.raises(CatalogError, match=re.escape(str(path)) + ": " + message):
        load_catalog([path])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: {extends: b}\nb: {extends: a}\n", r"entry 'b': key 'extends': cycle a -> b -> a"),
        (
            "alexnet.x: {extends: alexnet}\nalexnet.x: {extends: alexnet}\n",
            r"invalid YAML: .*duplicate key 'alexnet.x'",
        ),
        ("bad/name: {extends: alexnet}\n", r"entry name 'bad/name': expected letters, digits and \. _ \+ -"),
        ("- alexnet\n", r"expected a mapping of entry name -> entry, got list"),
        ("alexnet: [1, 2]\n", r"entry 'alexnet': expected a mapping of keys, got list"),
        ("a: {extends: alexnet\n", r"invalid YAML"),
    ],
)
def test_invalid_file_is_refused_with_its_path(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(CatalogError, match=re.escape(str(path)) + ": " + message):
        load_catalog([path])


def test_missing_catalog_file(tmp_path):
    with pytest.raises(CatalogError, match=r"catalog file not found: .*nothing\.yaml"):
        load_catalog([tmp_path / "nothing.yaml"])


def test_unknown_backbone_lists_known_names_and_suggests():
    with pytest.raises(
        CatalogError,
        match=r"unknown backbone 'alexnett' \(did you mean 'alexnet'.*\); "
        r"known backbones: \[.*'ViT-B-32.openai'.*\]",
    ):
        get_entry("alexnett")


def test_empty_user_file_changes_nothing(tmp_path):
    assert load_catalog([write(tmp_path, "")]) == load_catalog()


def test_direct_construction_is_validated():
    with pytest.raises(CatalogError, match=r"entry 'x': key 'layers': expected a non-empty list of distinct"):
        CatalogEntry(name="x", source="open_clip", architecture="RN50", weights="openai", layers=("a", "a"))
