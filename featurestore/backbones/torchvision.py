"""torchvision backbones: built by name with a pretrained tag, seeded random weights or a state_dict file; layers
are the model's FX graph nodes (``get_graph_node_names``) plus module names, read with ``create_feature_extractor``
(``_graph.py``: nodes changed in place by a later operation are flagged and read before the change).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm

from featurestore.backbones._base import (
    WeightsError,
    catalog_preprocessing,
    catalog_transform,
    device_of,
    seeded,
    weights_id,
)
from featurestore.backbones._graph import GraphBackbone
from featurestore.catalog import FILE_PREFIX, UNTRAINED, CatalogEntry, CatalogError, did_you_mean


def load(entry: CatalogEntry, device: str | torch.device | None = "cpu") -> TorchvisionBackbone:
    """Build `entry`'s model with its weights, in eval mode on `device`, with the catalog's preprocessing."""
    model = _build(entry)
    identity = weights_id(entry, model)  # hashed on the CPU, before moving
    preprocessing = entry.preprocessing
    assert preprocessing is not None  # the catalog requires it for torchvision
    return TorchvisionBackbone(
        entry=entry,
        model=model.eval().to(device_of(device)),
        transform=catalog_transform(preprocessing),
        preprocessing=catalog_preprocessing(preprocessing),
        weights_id=identity,
    )


def _build(entry: CatalogEntry) -> torch.nn.Module:
    architecture = entry.architecture
    known = tvm.list_models()
    if architecture not in known:
        raise CatalogError(
            f"entry {entry.name!r}: unknown torchvision architecture {architecture!r}"
            f"{did_you_mean(architecture, known)}; see torchvision.models.list_models()"
        )
    if entry.weights == UNTRAINED:
        with seeded(entry.seed):
            return tvm.get_model(architecture, weights=None)
    path = entry.weights_file
    if path is not None:
        return _from_file(entry, path)
    tags = [weights.name for weights in tvm.get_model_weights(architecture)]
    if entry.weights not in tags:
        choices = [*tags, UNTRAINED, FILE_PREFIX + "<path>"]
        raise CatalogError(
            f"entry {entry.name!r}: torchvision {architecture} has no weights {entry.weights!r}"
            f"{did_you_mean(entry.weights, tags)}; available: {choices}"
        )
    weights = tvm.get_model_weights(architecture)[entry.weights]
    try:
        return tvm.get_model(architecture, weights=weights)
    except Exception as err:
        raise WeightsError(
            f"entry {entry.name!r}: could not get torchvision weights {weights} from {weights.url} "
            f"({type(err).__name__}: {err}). Offline? Download that file elsewhere and point the entry at it: "
            f'weights: "{FILE_PREFIX}/path/to/{Path(weights.url).name}"'
        ) from err


def _from_file(entry: CatalogEntry, path: Path) -> torch.nn.Module:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"entry {entry.name!r}: cannot read weights file {path} ({type(err).__name__}: {err})"
        ) from err
    model = tvm.get_model(entry.architecture, weights=None)
    try:
        model.load_state_dict(state_dict)
    except Exception as err:
        raise WeightsError(
            f"entry {entry.name!r}: {path} is not a state_dict of torchvision {entry.architecture}: {err}"
        ) from err
    return model


@dataclass(eq=False)
class TorchvisionBackbone(GraphBackbone):
    """A torchvision model whose layers are FX graph nodes and module names (traced with torchvision's defaults)."""
