"""The Zarr v3 feature store: one group per backbone, one row-chunked array per layer, rows keyed by NSD id.

One module per idea: ``layout`` (node names, how a layer is stored and chunked, row plans), ``provenance`` (what
made the features and the one test of "same recipe"), ``lock`` (one writer per backbone), ``reader`` (opening a
store, lazy features) and ``writer`` (``FeatureStore``: the write protocol on top of the reader). The public names
are re-exported here, so ``from featurestore.store import open_features, FeatureStore, ...`` is the import path.
"""

from __future__ import annotations

from featurestore.store.layout import (
    ChunkTask,
    LayerLayout,
    RowPlan,
    plan_rows,
    storage_chunking,
)
from featurestore.store.lock import StoreLockedError
from featurestore.store.provenance import ProvenanceError, build_provenance
from featurestore.store.reader import open_features
from featurestore.store.writer import FeatureStore, open_store

__all__ = [
    "ChunkTask",
    "FeatureStore",
    "LayerLayout",
    "ProvenanceError",
    "RowPlan",
    "StoreLockedError",
    "build_provenance",
    "open_features",
    "open_store",
    "plan_rows",
    "storage_chunking",
]
