"""Extract vision-backbone activations once into chunked Zarr stores indexed by NSD id, then read them lazily.

``open_features`` / ``open_store`` need only zarr, dask and xarray; ``extract`` (and the backbones behind it) imports
torch on first use, so processes that only read features never pay for it.

``featurestore.extract`` is always the function, also once the submodule of the same name is imported (Python then
sets the package attribute to the module; ``_Package`` binds the function instead). The module itself stays
reachable as ``sys.modules["featurestore.extract"]`` or through ``from featurestore.extract import ...``.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
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
    """Import the torch-, h5py- and nilearn-backed entry points on first access and bind them in the package."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")


class _Package(ModuleType):
    """The package's module type: a submodule named like the lazy function it holds never shadows that function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and value.__name__ == _LAZY.get(name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
