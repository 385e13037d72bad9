"""Extract vision-backbone activations once into chunked Zarr stores indexed by NSD id, then read them lazily.

``open_features`` / ``open_store`` need only zarr, dask and xarray; ``extract`` (and the backbones behind it) imports
torch on first use, so processes that only read features never pay for it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from featurestore.catalog import CatalogEntry, CatalogError, get_entry, load_catalog
from featurestore.errors import FeatureStoreError, InvalidParameterError, MissingEntryError
from featurestore.store import FeatureStore, ProvenanceError, StoreLockedError, open_features, open_store

__all__ = [
    "CatalogEntry",
    "CatalogError",
    "FeatureStore",
    "FeatureStoreError",
    "InvalidParameterError",
    "MissingEntryError",
    "ProvenanceError",
    "StoreLockedError",
    "extract",
    "get_entry",
    "load_catalog",
    "make_demo_data",
    "open_features",
    "open_stimuli",
    "open_store",
]

_LAZY = {
    "extract": "featurestore.extract",
    "make_demo_data": "featurestore.demo_data",
    "open_stimuli": "featurestore.stimuli",
}


def __getattr__(name: str) -> Any:
    """Import the torch-, h5py- and nilearn-backed entry points on first access."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")
