"""open_clip backbones: the image tower of a CLIP model built with a pretrained tag, seeded random weights or a
checkpoint file; layers are the modules of ``model.visual`` (read with forward hooks) plus ``"embedding"``
(``model.encode_image``). Preprocessing is the model's own transform unless the catalog entry gives one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import open_clip
import torch

from featurestore.backbones._base import (
    Backbone,
    Extractor,
    LayerInfo,
    TokenLayout,
    WeightsError,
    catalog_preprocessing,
    catalog_transform,
    device_of,
    is_batch_output,
    seeded,
    weights_id,
)
from featurestore.catalog import FILE_PREFIX, UNTRAINED, CatalogEntry, CatalogError, did_you_mean

EMBEDDING = "embedding"


def load(entry: CatalogEntry, device: str | torch.device | None = "cpu") -> OpenClipBackbone:
    """Build `entry`'s CLIP model with its weights, in eval mode on `device`, with its transform."""
    model, own_transform = _build(entry)
    identity = weights_id(entry, model)  # hashed on the CPU, before moving
    if entry.preprocessing is None:
        transform, preprocessing = own_transform, _own_preprocessing(model)
    else:
        transform, preprocessing = (catalog_transform(entry.preprocessing), catalog_preprocessing(entry.preprocessing))
    return OpenClipBackbone(
        entry=entry,
        model=model.eval().to(device_of(device)),
        transform=transform,
        preprocessing=preprocessing,
        weights_id=identity,
    )


def _build(entry: CatalogEntry) -> tuple[torch.nn.Module, Any]:
    """The model and open_clip's validation transform."""
    architecture = entry.architecture
    known = open_clip.list_models()
    if architecture not in known:
        raise CatalogError(
            f"entry {entry.name!r}: unknown open_clip architecture {architecture!r}"
            f"{did_you_mean(architecture, known)}; see open_clip.list_models()"
        )
    if entry.weights == UNTRAINED:
        with seeded(entry.seed):
            model, _, transform = open_clip.create_model_and_transforms(architecture, pretrained=None)
        return model, transform
    path = entry.weights_file
    if path is not None:
        pretrained, what = str(path), f"checkpoint {path}"
    else:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        if entry.weights not in tags:
            raise CatalogError(
                f"entry {entry.name!r}: open_clip {architecture} has no weights {entry.weights!r}"
                f"{did_you_mean(entry.weights, tags)}; available: "
                f"{[*tags, UNTRAINED, FILE_PREFIX + '<path>']}"
            )
        pretrained, what = entry.weights, f"pretrained weights {architecture} {entry.weights!r}"
    try:
        model, _, transform = open_clip.create_model_and_transforms(architecture, pretrained=pretrained)
    except Exception as err:
        hint = (
            ""
            if path is not None
            else (
                f" Offline? Download {open_clip.get_pretrained_url(architecture, entry.weights) or 'the checkpoint'} "
                f'elsewhere and point the entry at it: weights: "{FILE_PREFIX}/path/to/checkpoint.pt"'
            )
        )
        raise WeightsError(
            f"entry {entry.name!r}: could not load open_clip {what} ({type(err).__name__}: {err}).{hint}"
        ) from err
    return model, transform


def _own_preprocessing(model: torch.nn.Module) -> dict[str, Any]:
    """open_clip's resolved preprocessing config (size, mean, std, interpolation, resize mode), JSON-able."""
    config = dict(model.visual.preprocess_cfg)
    size = config.pop("size")
    image_size = [size, size] if isinstance(size, int) else list(size)
    jsonable = {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}
    return {"origin": "open_clip", "image_size": image_size, **jsonable}


def _record(
    outputs: dict[str, list[tuple[Any, int]]], name: str, module: torch.nn.Module, inputs: Any, output: Any
) -> None:
    """Forward hook of the probe pass: keep every output of the module and its version counter."""
    outputs.setdefault(name, []).append((output, output._version if isinstance(output, torch.Tensor) else 0))


def _capture(
    captured: dict[str, torch.Tensor], copy: bool, name: str, module: torch.nn.Module, inputs: Any, output: torch.Tensor
) -> None:
    """Forward hook of the extractor: keep the output (a copy when a later operation changes it in place)."""
    captured[name] = output.clone() if copy else output


@dataclass(eq=False)
class OpenClipBackbone(Backbone):
    """An open_clip model whose layers are the modules of its image tower plus the image embedding."""

    def _probe_layers(self) -> list[LayerInfo]:
        """Modules called exactly once whose output is a batch-first tensor, in the order they finish."""
        outputs: dict[str, list[tuple[Any, int]]] = {}
        handles = [
            module.register_forward_hook(functools.partial(_record, outputs, name))
            for name, module in self.model.visual.named_modules()
            if name
        ]
        try:
            with torch.no_grad():  # not inference_mode: that turns off the version counters
                embedding = self.model.encode_image(self.probe_input())
        finally:
            for handle in handles:
                handle.remove()
        layers = [
            LayerInfo(name, inplace=calls[0][0]._version != calls[0][1], shape=tuple(calls[0][0].shape[1:]))
            for name, calls in outputs.items()
            if len(calls) == 1 and is_batch_output(calls[0][0])
        ]
        return [*layers, LayerInfo(EMBEDDING, inplace=False, shape=tuple(embedding.shape[1:]))]

    def _token_layout(self) -> TokenLayout | None:
        """open_clip's VisionTransformer: the class token, then the grid of patches (ResNet towers: None)."""
        visual = self.model.visual
        if getattr(visual, "class_embedding", None) is None or not hasattr(visual, "grid_size"):
            return None
        return TokenLayout(n_prefix=1, n_patches=math.prod(visual.grid_size), has_cls=True)

    def _make_extractor(self, layers: list[str]) -> Extractor:
        modules = dict(self.model.visual.named_modules())
        inplace = self.inplace_layers()
        hooked = [layer for layer in layers if layer != EMBEDDING]
        model, device = self.model, self.device

        def extract(images: torch.Tensor) -> dict[str, torch.Tensor]:
            captured: dict[str, torch.Tensor] = {}
            handles = [
                modules[name].register_forward_hook(functools.partial(_capture, captured, name in inplace, name))
                for name in hooked
            ]
            try:
                with torch.no_grad():
                    captured[EMBEDDING] = model.encode_image(images.to(device))
            finally:
                for handle in handles:
                    handle.remove()
            return {layer: captured[layer] for layer in layers}

        return extract
