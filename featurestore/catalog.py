"""The backbone catalog: a YAML model zoo read into frozen, validated entries (what to load, how, which layers).

The built-in zoo is the repository's ``catalog.yaml``; user catalog files add entries or override built-in ones,
and an entry may ``extends: <other entry>`` so that a twin (an untrained control, a local weights file) is a few
lines. Errors name the file, the entry, the key, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from featurestore.errors import FeatureStoreError

BUILTIN_CATALOG = Path(__file__).with_name("catalog.yaml")
# source -> whether the catalog must give `preprocessing` (open_clip and timm models carry their own transform)
SOURCES: dict[str, bool] = {"torchvision": True, "open_clip": False, "timm": False}
UNTRAINED = "untrained"
FILE_PREFIX = "file:"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
DTYPES = ("float16", "float32")
REDUCE_SPEC = re.compile(r"avgpool|srp:[1-9][0-9]*")
# which tokens of a ViT block's (tokens, width) output to store: the class token, the mean of the patch tokens
# (register tokens excluded), or all of them (then the layer needs a `reduce`, as a whole token map is large)
TOKEN_MODES = ("cls", "mean", "all")
ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
ENTRY_KEYS = (
    "source",
    "architecture",
    "weights",
    "seed",
    "preprocessing",
    "layers",
    "reduce",
    "reduce_seed",
    "tokens",
    "dtype",
    "meta",
)
REQUIRED_KEYS = ("source", "architecture", "weights", "layers")
PREPROCESSING_KEYS = ("resize", "crop", "interpolation", "mean", "std")


class CatalogError(FeatureStoreError, ValueError):
    """A catalog file, entry or lookup is invalid; the message names where, what was expected and what was found."""


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """' (did you mean ...?)' for near misses of `word` among `choices`, else ''."""
    matches = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(map(repr, matches))}?)" if matches else ""


def _key_error(name: str, key: str, problem: str) -> CatalogError:
    return CatalogError(f"entry {name!r}: key {key!r}: {problem}")


@dataclass(frozen=True)
class Preprocessing:
    """Image preprocessing in torchvision's eval recipe: resize the shorter side, centre-crop, normalise."""

    resize: int | None
    crop: int | None
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        for key in ("resize", "crop"):
            size = getattr(self, key)
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise CatalogError(f"preprocessing {key!r}: expected a positive integer or null, got {size!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise CatalogError(
                f"preprocessing 'interpolation': expected one of {list(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise CatalogError(f"preprocessing {key!r}: expected 3 numbers (R, G, B), got {values!r}")
        if min(self.std) <= 0:
            raise CatalogError(f"preprocessing 'std': expected 3 positive numbers, got {self.std!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists, not tuples)."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass(frozen=True, kw_only=True)
class CatalogEntry:
    """One backbone of the zoo: where its weights come from, how images are prepared, which layers to store.

    ``weights`` is a pretrained tag of the source (``"IMAGENET1K_V1"``, ``"openai"``), ``"untrained"`` (seeded
    random init, ``seed`` required) or ``"file:/path/to/state_dict.pt"``. ``preprocessing=None`` means the
    model's own transform (open_clip, timm). ``reduce`` maps a layer to ``"avgpool"`` or ``"srp:<k>"`` (seeded by
    ``reduce_seed``), applied when features are stored in ``dtype``. ``tokens`` maps a ViT token layer to the
    tokens it stores (``TOKEN_MODES``), before any reduction.
    """

    name: str
    source: str
    architecture: str
    weights: str
    seed: int | None = None
    preprocessing: Preprocessing | None = None
    layers: tuple[str, ...]
    reduce: Mapping[str, str] = field(default_factory=dict, hash=False)
    reduce_seed: int = 0
    tokens: Mapping[str, str] = field(default_factory=dict, hash=False)
    dtype: str = "float16"
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for key, kind in (("layers", tuple), ("reduce", dict), ("tokens", dict), ("meta", dict)):
            object.__setattr__(self, key, kind(getattr(self, key)))  # callers may pass lists / mappings
        name = self.name
        if not isinstance(name, str) or not ENTRY_NAME.fullmatch(name):
            raise CatalogError(
                f"entry name {name!r}: expected letters, digits and . _ + - "
                f"(it names a store group), starting with a letter or digit"
            )
        if self.source not in SOURCES:
            raise _key_error(
                name,
                "source",
                f"expected one of {list(SOURCES)}, got {self.source!r}{did_you_mean(str(self.source), list(SOURCES))}",
            )
        if not self.architecture:
            raise _key_error(name, "architecture", "expected a non-empty model name")
        if not self.weights or self.weights == FILE_PREFIX:
            raise _key_error(
                name,
                "weights",
                f"expected a pretrained tag, {UNTRAINED!r} or "
                f"'{FILE_PREFIX}/path/to/state_dict.pt', got {self.weights!r}",
            )
        if self.weights == UNTRAINED and self.seed is None:
            raise _key_error(
                name, "seed", f"weights {UNTRAINED!r} needs an integer seed (for reproducible random weights), got none"
            )
        if self.weights != UNTRAINED and self.seed is not None:
            raise _key_error(
                name,
                "seed",
                f"a seed is only used with weights {UNTRAINED!r}, got seed {self.seed!r} with weights {self.weights!r}",
            )
        if self.preprocessing is None and SOURCES[self.source]:
            raise _key_error(
                name, "preprocessing", f"required for source {self.source!r} (resize, crop, interpolation, mean, std)"
            )
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise _key_error(
                name, "layers", f"expected a non-empty list of distinct layer names, got {list(self.layers)!r}"
            )
        for layer, spec in self.reduce.items():
            if not REDUCE_SPEC.fullmatch(spec):
                raise _key_error(
                    name,
                    "reduce",
                    f"layer {layer!r}: expected 'avgpool' or 'srp:<k>' (k a positive integer), got {spec!r}",
                )
        for layer, mode in self.tokens.items():
            if mode not in TOKEN_MODES:
                raise _key_error(
                    name,
                    "tokens",
                    f"layer {layer!r}: expected one of {list(TOKEN_MODES)}{did_you_mean(str(mode), TOKEN_MODES)}, "
                    f"got {mode!r}",
                )
            if mode == "all" and layer not in self.reduce:
                raise _key_error(
                    name,
                    "tokens",
                    f"layer {layer!r}: 'all' keeps every token: give the layer a reduce too "
                    f"(srp:<k> projects the token map, avgpool averages all tokens), or take 'cls' or 'mean'",
                )
        if self.dtype not in DTYPES:
            raise _key_error(name, "dtype", f"expected one of {list(DTYPES)}, got {self.dtype!r}")

    @property
    def weights_file(self) -> Path | None:
        """The local weights file of a ``file:`` entry, else None."""
        return Path(self.weights[len(FILE_PREFIX) :]) if self.weights.startswith(FILE_PREFIX) else None

    def with_weights(self, weights: str, seed: int | None = None) -> CatalogEntry:
        """A validated copy with other weights (``seed`` is needed for ``"untrained"`` and refused otherwise)."""
        if weights.startswith(FILE_PREFIX):
            weights = FILE_PREFIX + str(Path(weights[len(FILE_PREFIX) :]).expanduser().resolve())
        return dataclasses.replace(self, weights=weights, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for provenance."""
        return {
            "name": self.name,
            "source": self.source,
            "architecture": self.architecture,
            "weights": self.weights,
            "seed": self.seed,
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
            "layers": list(self.layers),
            "reduce": dict(self.reduce),
            "reduce_seed": self.reduce_seed,
            "tokens": dict(self.tokens),
            "dtype": self.dtype,
            "meta": dict(self.meta),
        }


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    """Raw entries of one catalog file, keys checked, relative ``file:`` weights made absolute."""
    if not path.is_file():
        raise CatalogError(f"catalog file not found: {path}")
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise CatalogError(f"{path}: invalid YAML: {err}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise CatalogError(f"{path}: expected a mapping of entry name -> entry, got {type(document).__name__}")
    entries = {}
    for name, body in document.items():
        if str(name).startswith("_"):  # a template for YAML anchors (`_imagenet: &imagenet`), not an entry
            continue
        if not isinstance(body, dict):
            raise CatalogError(f"{path}: entry {name!r}: expected a mapping of keys, got {type(body).__name__}")
        for key in body:
            if key not in ENTRY_KEYS and key != "extends":
                raise CatalogError(
                    f"{path}: entry {name!r}: unknown key {key!r}{did_you_mean(str(key), ENTRY_KEYS)}; "
                    f"valid keys: {['extends', *ENTRY_KEYS]}"
                )
        weights = body.get("weights")
        if isinstance(weights, str) and weights.startswith(FILE_PREFIX):
            file = Path(weights[len(FILE_PREFIX) :]).expanduser()
            body = {**body, "weights": FILE_PREFIX + str((path.parent / file).resolve())}
        entries[str(name)] = body
    return entries


def _merged(name: str, raw: Mapping[str, tuple[dict[str, Any], Path]], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """An entry's keys with its ``extends`` chain applied: the child's keys win, ``meta`` merges, and a child
    that sets ``weights`` does not inherit the parent's ``seed``."""
    body, origin = raw[name]
    if "extends" not in body:
        return dict(body)
    parent = body["extends"]
    if not isinstance(parent, str) or parent not in raw:
        raise CatalogError(
            f"{origin}: entry {name!r}: key 'extends': unknown entry {parent!r}{did_you_mean(str(parent), list(raw))}"
        )
    if parent in chain or parent == name:
        raise CatalogError(f"{origin}: entry {name!r}: key 'extends': cycle {' -> '.join((*chain, name, parent))}")
    fields = _merged(parent, raw, (*chain, name))
    if "weights" in body:
        fields.pop("seed", None)
    child = {key: value for key, value in body.items() if key != "extends"}
    if isinstance(fields.get("meta"), dict) and isinstance(child.get("meta"), dict):
        child["meta"] = {**fields["meta"], **child["meta"]}
    return {**fields, **child}


def _expect(ok: bool, name: str, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise _key_error(name, key, f"expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_map(name: str, key: str, value: Any) -> dict[str, str]:
    _expect(
        isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()),
        name,
        key,
        "a mapping of strings to strings (quote numbers)",
        value,
    )
    return dict(value)


def _preprocessing(name: str, value: Any) -> Preprocessing | None:
    if value is None:
        return None
    _expect(isinstance(value, dict), name, "preprocessing", "a mapping or null", value)
    unknown = sorted(set(value) - set(PREPROCESSING_KEYS))
    if unknown:
        raise _key_error(name, "preprocessing", f"unknown key {unknown[0]!r}; valid keys: {list(PREPROCESSING_KEYS)}")
    missing = [key for key in ("interpolation", "mean", "std") if key not in value]
    if missing:
        raise _key_error(name, "preprocessing", f"missing key {missing[0]!r} (required: interpolation, mean, std)")
    for key in ("mean", "std"):
        _expect(isinstance(value[key], list), name, f"preprocessing.{key}", "a list of 3 numbers", value[key])
    try:
        return Preprocessing(
            resize=value.get("resize"),
            crop=value.get("crop"),
            interpolation=value["interpolation"],
            mean=tuple(value["mean"]),
            std=tuple(value["std"]),
        )
    except CatalogError as err:
        raise CatalogError(f"entry {name!r}: {err}") from None


def _entry(name: str, fields: Mapping[str, Any]) -> CatalogEntry:
    """Type-check merged raw keys and build the entry (which checks the values)."""
    missing = [key for key in REQUIRED_KEYS if key not in fields]
    if missing:
        raise CatalogError(f"entry {name!r}: missing key {missing[0]!r} (required: {list(REQUIRED_KEYS)})")
    for key in ("source", "architecture", "weights", "dtype"):
        if key in fields:
            _expect(isinstance(fields[key], str), name, key, "a string", fields[key])
    seed = fields.get("seed")
    _expect(seed is None or _is_int(seed), name, "seed", "an integer or null", seed)
    _expect(_is_int(fields.get("reduce_seed", 0)), name, "reduce_seed", "an integer", fields.get("reduce_seed"))
    layers = fields["layers"]
    _expect(
        isinstance(layers, list) and all(isinstance(layer, str) for layer in layers),
        name,
        "layers",
        "a list of layer names",
        layers,
    )
    return CatalogEntry(
        name=name,
        source=fields["source"],
        architecture=fields["architecture"],
        weights=fields["weights"],
        seed=seed,
        preprocessing=_preprocessing(name, fields.get("preprocessing")),
        layers=tuple(layers),
        reduce=_string_map(name, "reduce", fields.get("reduce", {})),
        reduce_seed=fields.get("reduce_seed", 0),
        tokens=_string_map(name, "tokens", fields.get("tokens", {})),
        dtype=fields.get("dtype", "float16"),
        meta=_string_map(name, "meta", fields.get("meta", {})),
    )


def load_catalog(paths: str | Path | Sequence[str | Path] = ()) -> dict[str, CatalogEntry]:
    """Read the built-in catalog then each user file in order (later entries of the same name win).

    Every entry is validated; an error names the file, entry and key. Each call reads the files afresh, so the
    returned entries are the caller's own.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    raw: dict[str, tuple[dict[str, Any], Path]] = {}
    for path in (BUILTIN_CATALOG, *(Path(p) for p in paths)):
        for name, body in _read_file(path).items():
            raw[name] = (body, path)
    catalog = {}
    for name, (_, origin) in raw.items():
        try:
            catalog[name] = _entry(name, _merged(name, raw))
        except CatalogError as err:
            message = str(err)
            raise CatalogError(message if message.startswith(str(origin)) else f"{origin}: {message}") from None
    return catalog


def get_entry(name: str, catalog_paths: str | Path | Sequence[str | Path] = ()) -> CatalogEntry:
    """The entry called `name` in the built-in catalog plus `catalog_paths`; unknown names list the known ones."""
    catalog = load_catalog(catalog_paths)
    if name not in catalog:
        raise CatalogError(
            f"unknown backbone {name!r}{did_you_mean(name, list(catalog))}; known backbones: {sorted(catalog)}"
        )
    return catalog[name]
