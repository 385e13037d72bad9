"""timm backbones: any ``timm.list_models()`` architecture with a pretrained tag (``lvd142m`` for
``vit_small_patch14_dinov2.lvd142m``), seeded random weights or a state_dict file, all loaded through timm's own
``create_model(pretrained=...)`` machinery. Preprocessing is timm's eval transform for the model's pretrained cfg
(``resolve_model_data_config`` + ``create_transform``) unless the catalog entry gives one.

Layers are FX graph nodes plus module names (``_graph.py``, as for torchvision), traced with timm's own leaf
modules and wrapped functions (the tracer settings of timm's ``features_only`` FX mode). Why not the
alternatives: ``forward_intermediates`` / ``feature_info`` only offer a few block outputs and not every model has
them, while forward hooks miss functional nodes; torchvision's tracer alone fails on some timm ViTs (control flow
on traced values), timm's settings trace ViTs (DINOv2 included), ConvNeXts, ResNets, Swin and EVA alike. A block
name (``blocks.5``, ``stages.2``) reads that block's output, the same tensor ``forward_intermediates`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.data import create_transform, resolve_model_data_config
from timm.layers import get_notrace_functions, get_notrace_modules
from timm.models import get_arch_pretrained_cfgs, split_model_name_tag
from torchvision import transforms as T

from featurestore.backbones._base import (
    TokenLayout,
    ToRGB,
    WeightsError,
    catalog_preprocessing,
    catalog_transform,
    device_of,
    seeded,
    weights_id,
)
from featurestore.backbones._graph import GraphBackbone
from featurestore.catalog import FILE_PREFIX, UNTRAINED, CatalogEntry, CatalogError, did_you_mean


def load(entry: CatalogEntry, device: str | torch.device | None = "cpu") -> TimmBackbone:
    """Build `entry`'s timm model with its weights, in eval mode on `device`, with timm's eval transform."""
    model = _build(entry)
    identity = weights_id(entry, model)  # hashed on the CPU, before moving
    if entry.preprocessing is None:
        config = resolve_model_data_config(model)
        transform = T.Compose([ToRGB(), create_transform(**config, is_training=False)])
        preprocessing = own_preprocessing(config)
    else:
        transform, preprocessing = (catalog_transform(entry.preprocessing), catalog_preprocessing(entry.preprocessing))
    return TimmBackbone(
        entry=entry,
        model=model.eval().to(device_of(device)),
        transform=transform,
        preprocessing=preprocessing,
        weights_id=identity,
    )


def known_tags(architecture: str) -> list[str]:
    """The architecture's pretrained tags in timm's order (the first is its default)."""
    return [split_model_name_tag(name)[1] for name in get_arch_pretrained_cfgs(architecture)]


def _check_architecture(entry: CatalogEntry) -> None:
    """Refuse a name timm does not know; a name with a tag says to move the tag to ``weights``."""
    architecture = entry.architecture
    known = timm.list_models()
    if architecture in known:
        return
    base, tag = split_model_name_tag(architecture)
    if tag and base in known:
        raise CatalogError(
            f"entry {entry.name!r}: timm architecture {architecture!r} carries a pretrained tag; "
            f"write architecture: {base} and weights: {tag}"
        )
    raise CatalogError(
        f"entry {entry.name!r}: unknown timm architecture {architecture!r}"
        f"{did_you_mean(architecture, known)}; see timm.list_models()"
    )


def _build(entry: CatalogEntry) -> torch.nn.Module:
    _check_architecture(entry)
    architecture = entry.architecture
    if entry.weights == UNTRAINED:
        with seeded(entry.seed):
            return timm.create_model(architecture, pretrained=False)
    tags = known_tags(architecture)
    path = entry.weights_file
    if path is not None:
        # the architecture's default pretrained cfg (its first tag) with timm's file source: timm's checkpoint
        # filter converts original checkpoints (DINOv2's own .pth) and loads strictly
        name, overlay, what = architecture, {"file": str(path)}, f"weights file {path}"
    else:
        if entry.weights not in tags:
            raise CatalogError(
                f"entry {entry.name!r}: timm {architecture} has no weights {entry.weights!r}"
                f"{did_you_mean(entry.weights, tags)}; available: "
                f"{[*tags, UNTRAINED, FILE_PREFIX + '<path>']}"
            )
        name, overlay = f"{architecture}.{entry.weights}", None
        what = f"pretrained weights {name}"
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as err:
        hint = "" if path is not None else _offline_hint(architecture, entry.weights, tags)
        raise WeightsError(
            f"entry {entry.name!r}: could not load timm {what} ({type(err).__name__}: {err}).{hint}"
        ) from err


def _offline_hint(architecture: str, tag: str, tags: list[str]) -> str:
    """Where the tag's weights live and how to point the entry at a downloaded copy."""
    cfg = get_arch_pretrained_cfgs(architecture)[f"{architecture}.{tag}"]
    places = [f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else None, cfg.url or None]
    where = " or ".join(place for place in places if place) or "the checkpoint"
    caveat = (
        ""
        if tag == tags[0]
        else (f" (file weights use the default tag {tags[0]!r}'s cfg: give the entry the {tag!r} preprocessing)")
    )
    return (
        f" Offline? Download {where} elsewhere and point the entry at it: "
        f'weights: "{FILE_PREFIX}/path/to/model.safetensors"{caveat}'
    )


def own_preprocessing(config: dict[str, Any]) -> dict[str, Any]:
    """timm's resolved data config (input size, interpolation, mean, std, crop_pct, crop_mode), JSON-able."""
    jsonable = {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}
    return {"origin": "timm", "image_size": list(config["input_size"][1:]), **jsonable}


@dataclass(eq=False)
class TimmBackbone(GraphBackbone):
    """A timm model whose layers are FX graph nodes and module names, traced with timm's leaf modules."""

    def _tracer_kwargs(self) -> dict[str, Any]:
        return {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}

    def _token_layout(self) -> TokenLayout | None:
        """timm ViTs (ViT, DINOv2, EVA, SigLIP, DeiT): class and register tokens first, then the patches."""
        n_patches = getattr(getattr(self.model, "patch_embed", None), "num_patches", None)
        n_prefix = getattr(self.model, "num_prefix_tokens", None)
        if n_patches is None or n_prefix is None:
            return None
        return TokenLayout(n_prefix, n_patches, has_cls=getattr(self.model, "cls_token", None) is not None)
