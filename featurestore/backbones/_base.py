"""What every backbone adapter gives back: a loaded model with its transform, weights identity and layers.

An adapter is a module with ``load(entry, device) -> Backbone``; its ``Backbone`` subclass says which layers
exist (``_probe_layers``) and how to read several of them in one forward pass (``_make_extractor``).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import difflib
import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from featurestore.catalog import CatalogEntry, CatalogError, Preprocessing
from featurestore.errors import FeatureStoreError
from featurestore.preprocess import DeviceTransform, translate

Extractor = Callable[[torch.Tensor], dict[str, torch.Tensor]]
PREPROCESS_PATHS = ("device", "pil")
PROBE_BATCH = 2  # images in the probe pass that finds the layers (a layer's output must lead with this size)
_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


class WeightsError(FeatureStoreError, RuntimeError):
    """Weights could not be loaded; the message says which, why, and how to point the entry at a local file."""


@dataclass(frozen=True)
class LayerInfo:
    """A readable layer: its name, its per-image output shape at the model's input size (after the entry's token
    selection), whether a later operation modifies its output in place (the extractor then returns a copy taken
    before that operation), whether it is a ViT token map (tokens, width), and the entry's ``tokens`` for it."""

    name: str
    inplace: bool
    shape: tuple[int, ...]
    token_map: bool = False
    tokens: str | None = None


@dataclass(frozen=True)
class TokenLayout:
    """How a ViT orders its tokens: ``n_prefix`` class / register tokens (a class token first when ``has_cls``),
    then ``n_patches`` patch tokens; a layer whose output is (n_prefix + n_patches, width) is a token map."""

    n_prefix: int
    n_patches: int
    has_cls: bool

    def is_token_map(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 2 and shape[0] == self.n_prefix + self.n_patches

    def select(self, tokens: torch.Tensor, mode: str) -> torch.Tensor:
        """(B, tokens, width) -> the class token (B, width), the mean patch token (B, width), or all tokens."""
        if mode == "cls":
            return tokens[:, 0]
        if mode == "mean":
            return tokens[:, self.n_prefix :].mean(dim=1)
        return tokens


@dataclass(eq=False)
class Backbone(abc.ABC):
    """A model in eval mode on its device with everything needed to extract and to record provenance.

    ``transform`` maps a PIL image to a float tensor (3, H, W); ``preprocessing`` is its resolved, JSON-able
    description; ``weights_id`` is ``{"weights": <entry weights>, "sha256": <hex>}`` (of the weights file, or of
    the state_dict tensors in key order).

    ``preprocess_on="device"`` resizes, crops and normalises on the model's device (``device_transform``, translated
    from ``transform``; ``featurestore.preprocess``) where the transform allows it, ``"pil"`` in the decoding
    workers with ``transform``; None (default) takes the device path on CUDA and PIL on the CPU, where stores then
    stay identical to earlier versions' (BENCHMARKS.md has both paths' speed). ``preprocessing["path"]`` records
    which runs (``pil_reason`` says why not the device), since the two differ by up to ``preprocess.MAX_LEVELS`` /
    255 per pixel and so make slightly different features.
    """

    entry: CatalogEntry
    model: torch.nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    preprocessing: dict[str, Any]
    weights_id: dict[str, str]
    preprocess_on: str | None = None
    device_transform: DeviceTransform | None = field(init=False, default=None)
    pil_reason: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.preprocess_on not in (None, *PREPROCESS_PATHS):
            raise CatalogError(f"preprocess_on: expected one of {list(PREPROCESS_PATHS)}, got {self.preprocess_on!r}")
        on_cuda = self.device.type == "cuda"
        if self.preprocess_on == "pil" or (self.preprocess_on is None and not on_cuda):
            translated, reason = None, ("asked for" if self.preprocess_on else "the model is on the CPU")
        else:
            translated, reason = translate(self.transform)
        self.device_transform, self.pil_reason = translated, reason
        self.preprocessing = {**self.preprocessing, "path": "pil" if translated is None else "device"}

    def preprocessed_on(self, path: str) -> Backbone:
        """This backbone preprocessing on `path` ("device" or "pil"; a group keeps the path it was made with), the
        layers already probed kept. Asking for "device" where the transform has no device version gives "pil"."""
        if path == self.preprocessing["path"]:
            return self
        other = dataclasses.replace(self, preprocess_on=path)
        if "layer_info" in self.__dict__:
            other.__dict__["layer_info"] = self.layer_info
        return other

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @functools.cached_property
    def token_layout(self) -> TokenLayout | None:
        """The token order of a ViT's blocks; None for models without token maps (convnets)."""
        return self._token_layout()

    @functools.cached_property
    def layer_info(self) -> tuple[LayerInfo, ...]:
        """Every readable layer in forward order (found once, by a forward pass on a blank batch), token layers
        marked, and the entry's ``tokens`` applied to the shapes (CatalogError naming the entry and the layer when
        it is not a token map)."""
        layout = self.token_layout
        infos = {
            info.name: dataclasses.replace(info, token_map=layout is not None and layout.is_token_map(info.shape))
            for info in self._probe_layers()
        }
        if self.entry.tokens:
            check_layer_names(self.entry.name, list(self.entry.tokens), list(infos))
        for layer, mode in self.entry.tokens.items():
            info = infos[layer]
            if not info.token_map:
                what = (
                    "this model has no token layers"
                    if layout is None
                    else f"token layers give ({layout.n_prefix + layout.n_patches} tokens, width)"
                )
                raise CatalogError(
                    f"entry {self.entry.name!r}: key 'tokens': layer {layer!r} is not a token layer (output shape "
                    f"{info.shape}; {what}); tokens apply to ViT block outputs, see `featurestore layers "
                    f"{self.entry.name}`"
                )
            if mode == "cls" and not layout.has_cls:
                raise CatalogError(
                    f"entry {self.entry.name!r}: key 'tokens': layer {layer!r}: 'cls' but the model has no class "
                    f"token; take 'mean' or 'all'"
                )
            shape = info.shape if mode == "all" else info.shape[1:]
            infos[layer] = dataclasses.replace(info, shape=shape, tokens=mode)
        return tuple(infos.values())

    def layer_names(self) -> list[str]:
        return [info.name for info in self.layer_info]

    def inplace_layers(self) -> set[str]:
        return {info.name for info in self.layer_info if info.inplace}

    def extractor(self, layers: Sequence[str]) -> Extractor:
        """A function from an image batch (B, 3, H, W) to ``{layer: tensor (B, ...)}`` for all `layers` in one
        forward pass (no autograd; outputs stay on the model's device)."""
        layers = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
        check_layer_names(self.entry.name, layers, self.layer_names())
        extract = self._make_extractor(layers)
        selected = {info.name: info.tokens for info in self.layer_info if info.name in layers and info.tokens}
        if not any(mode != "all" for mode in selected.values()):
            return extract
        layout = self.token_layout

        def extract_tokens(images: torch.Tensor) -> dict[str, torch.Tensor]:
            outputs = extract(images)
            return {
                layer: layout.select(out, selected[layer]) if layer in selected else out
                for layer, out in outputs.items()
            }

        return extract_tokens

    def probe_input(self) -> torch.Tensor:
        """A blank batch at the model's input size, for finding layers and their shapes."""
        height, width = self.preprocessing.get("image_size") or (224, 224)
        return torch.zeros(PROBE_BATCH, 3, height, width, device=self.device)

    def _token_layout(self) -> TokenLayout | None:
        """The model's token order, for adapters of models with ViT blocks."""
        return None

    @abc.abstractmethod
    def _probe_layers(self) -> list[LayerInfo]:
        """All readable layers, in forward order."""

    @abc.abstractmethod
    def _make_extractor(self, layers: list[str]) -> Extractor:
        """The extractor for already-validated layer names."""


def check_layer_names(entry_name: str, layers: Sequence[str], available: Sequence[str]) -> None:
    """Refuse an empty request or an unknown layer, naming the backbone, the layer and close valid names."""
    if not layers:
        raise CatalogError(f"backbone {entry_name!r}: no layers requested")
    known = set(available)
    for layer in layers:
        if layer not in known:
            close = difflib.get_close_matches(layer, list(available), n=5, cutoff=0.5)
            listing = (
                f"valid layers: {list(available)}"
                if len(available) <= 40
                else (f"{len(available)} layers, see `featurestore layers {entry_name}`")
            )
            hint = f"close matches: {close}; " if close else ""
            raise CatalogError(f"backbone {entry_name!r} has no layer {layer!r}; {hint}{listing}")


def is_batch_output(value: Any) -> bool:
    """Whether a probe-pass output is a tensor with the probe batch as its first dimension."""
    return isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == PROBE_BATCH


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block and restore the caller's random state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Deterministic hash of a state_dict: each key, dtype, shape and raw bytes, in key order."""
    digest = hashlib.sha256()
    for key, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return digest.hexdigest()


def weights_id(entry: CatalogEntry, model: torch.nn.Module) -> dict[str, str]:
    """The entry's weights and their sha256: of the file for ``file:`` weights, else of the state_dict."""
    path = entry.weights_file
    sha256 = sha256_file(path) if path is not None else sha256_state_dict(model.state_dict())
    return {"weights": entry.weights, "sha256": sha256}


class ToRGB:
    """Convert a PIL image to RGB (grey or RGBA stimuli would otherwise give 1 or 4 channels)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def catalog_transform(preprocessing: Preprocessing) -> T.Compose:
    """The catalog's preprocessing as torchvision's eval recipe (same steps as ``weights.transforms()``)."""
    mode = _INTERPOLATION[preprocessing.interpolation]
    steps: list[Any] = [ToRGB()]
    if preprocessing.resize is not None:
        steps.append(T.Resize(preprocessing.resize, interpolation=mode, antialias=True))
    if preprocessing.crop is not None:
        steps.append(T.CenterCrop(preprocessing.crop))
    steps += [
        T.PILToTensor(),
        T.ConvertImageDtype(torch.float32),
        T.Normalize(mean=preprocessing.mean, std=preprocessing.std),
    ]
    return T.Compose(steps)


def catalog_preprocessing(preprocessing: Preprocessing) -> dict[str, Any]:
    """Resolved description of :func:`catalog_transform` (``image_size`` is None when images keep their shape)."""
    crop = preprocessing.crop
    image_size = None if crop is None else [crop, crop]
    return {"origin": "catalog", "image_size": image_size, "resize_mode": "shortest", **preprocessing.to_dict()}


def device_of(device: str | torch.device | None) -> torch.device:
    """`device`, or CUDA when available and `device` is None."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
