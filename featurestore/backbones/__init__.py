"""Load a catalog entry's backbone and list or check its layers; one adapter module per catalog source.

Adding a source is one module with ``load(entry, device) -> Backbone`` (see ``_base.py``), one line
in ``ADAPTERS`` and its name in ``featurestore.catalog.SOURCES``. Adapter modules are imported on first use, so
importing this package (as every spawned DataLoader worker does) does not pay for open_clip's slow import.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType

import torch

from featurestore.backbones._base import Backbone, Extractor, LayerInfo, WeightsError, check_layer_names
from featurestore.catalog import UNTRAINED, CatalogEntry

__all__ = [
    "ADAPTERS",
    "Backbone",
    "Extractor",
    "LayerInfo",
    "WeightsError",
    "list_layers",
    "load_backbone",
    "validate_layers",
]


class LazyAdapters(Mapping[str, ModuleType]):
    """Catalog source -> adapter module, each module imported when first looked up."""

    def __init__(self, modules: Mapping[str, str]) -> None:
        self._modules = dict(modules)

    def __getitem__(self, source: str) -> ModuleType:
        return importlib.import_module(self._modules[source])

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __repr__(self) -> str:
        return f"LazyAdapters({self._modules!r})"


ADAPTERS: Mapping[str, ModuleType] = LazyAdapters(
    {
        "torchvision": "featurestore.backbones.torchvision",
        "open_clip": "featurestore.backbones.open_clip",
        "timm": "featurestore.backbones.timm",
    }
)


def load_backbone(
    entry: CatalogEntry, device: str | torch.device | None = "cpu", preprocess_on: str | None = None
) -> Backbone:
    """The entry's model with its weights, in eval mode on `device` (None: CUDA when available); `preprocess_on`
    "device" or "pil" says where images are resized (None: the device on CUDA, PIL on the CPU; see Backbone)."""
    backbone = ADAPTERS[entry.source].load(entry, device)
    return backbone if preprocess_on is None else backbone.preprocessed_on(preprocess_on)


def list_layers(entry: CatalogEntry) -> list[LayerInfo]:
    """Every readable layer of the entry's architecture, in forward order (built with random weights on the CPU,
    so it works before any weights are downloaded)."""
    return list(load_backbone(entry.with_weights(UNTRAINED, seed=0), "cpu").layer_info)


def validate_layers(backbone_or_entry: Backbone | CatalogEntry, layers: Sequence[str]) -> None:
    """Raise CatalogError naming the backbone, the first unknown layer and close valid names."""
    if isinstance(backbone_or_entry, Backbone):
        entry, available = backbone_or_entry.entry, backbone_or_entry.layer_names()
    else:
        entry, available = backbone_or_entry, [info.name for info in list_layers(backbone_or_entry)]
    check_layer_names(entry.name, [layers] if isinstance(layers, str) else list(layers), available)
