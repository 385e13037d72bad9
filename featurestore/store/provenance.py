"""Provenance: what made a backbone's features, recorded in its group, and the one test of "same recipe".

A group's ``provenance`` attribute holds the resolved catalog entry, the weights' identity (name + sha256),
the resolved preprocessing, the storage dtype, chunk_rows and the library versions of the run that created it.
Features made another way must never mix silently with stored ones, so a run compares its provenance with the
stored one (``provenance_differences``) and is refused when the recipe differs; library versions only warn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from featurestore.catalog import DTYPES
from featurestore.errors import FeatureStoreError, InvalidParameterError

__all__ = [
    "ProvenanceError",
    "build_provenance",
    "check_dtype",
    "library_versions",
    "provenance_differences",
    "version_differences",
]

# the entry keys that a backbone's weights and resolved preprocessing are made from
_MODEL_ENTRY_KEYS = ("weights", "seed", "preprocessing")
VERSIONED_PACKAGES = ("torch", "torchvision", "open_clip_torch", "timm", "zarr", "numpy", "nsd-featurestore")


class ProvenanceError(FeatureStoreError, ValueError):
    """Features requested with a different recipe than the ones already stored."""


def library_versions() -> dict[str, str | None]:
    """Versions of the packages that shape the features (None when not installed)."""
    versions: dict[str, str | None] = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def check_dtype(dtype: str) -> None:
    """Refuse a storage dtype the store does not write (InvalidParameterError listing those it does)."""
    if dtype not in DTYPES:
        raise InvalidParameterError(f"Unknown dtype={dtype!r}; expected one of {list(DTYPES)}")


def build_provenance(
    entry: Mapping[str, Any], weights: Mapping[str, Any], preprocessing: Mapping[str, Any], dtype: str, chunk_rows: int
) -> dict[str, Any]:
    """The group attribute that records what made a backbone's features (JSON-able)."""
    check_dtype(dtype)
    return {
        "entry": dict(entry),
        "weights": dict(weights),
        "preprocessing": dict(preprocessing),
        "dtype": dtype,
        "chunk_rows": int(chunk_rows),
        "versions": library_versions(),
    }


def short(value: Any) -> str:
    """A compact rendering of a differing value (hashes cut to 12 characters)."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + ".."
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def _differences(stored: Any, requested: Any, prefix: str) -> list[str]:
    """'key stored != requested' for every leaf where two JSON-like values differ."""
    if isinstance(stored, Mapping) and isinstance(requested, Mapping):
        out: list[str] = []
        for key in sorted(set(stored) | set(requested)):
            out += _differences(stored.get(key), requested.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    if isinstance(stored, (list, tuple)) and isinstance(requested, (list, tuple)):
        stored, requested = list(stored), list(requested)
    return [] if stored == requested else [f"{prefix} {short(stored)} != {short(requested)}"]


def provenance_differences(
    stored: Mapping[str, Any], requested: Mapping[str, Any], *, resolved: bool = True
) -> list[str]:
    """What differs between two provenances in ways that change the features (not library versions): the one
    definition of "same recipe".

    Compared: the model's source and architecture, the weights' sha256, the resolved preprocessing (with the path it
    ran on: "device" or "pil", the latter for groups that do not say), the storage dtype and chunk_rows. The catalog
    entry's name, default layers and metadata do not change a stored value and are not compared. With
    ``resolved=False``, ``requested`` is what a run knows before loading the model (its entry, dtype, chunk_rows,
    and a weights sha256 only for a weights file): the entry keys that the weights and the resolved preprocessing
    are made from (weights, seed, preprocessing) stand in for them, and a weights sha256 is compared only when
    ``requested`` has one.
    """

    def identity(p: Mapping[str, Any]) -> dict[str, Any]:
        entry, weights = p.get("entry", {}), p.get("weights", {})
        recipe = {
            "source": entry.get("source"),
            "architecture": entry.get("architecture"),
            "dtype": p.get("dtype"),
            "chunk_rows": p.get("chunk_rows"),
        }
        if resolved or "sha256" in requested.get("weights", {}):
            recipe["weights sha256"] = weights.get("sha256")
        if resolved:
            preprocessing = p.get("preprocessing")
            # groups made before the device path existed were preprocessed with PIL in the decoding workers
            recipe["preprocessing"] = (
                {"path": "pil", **preprocessing} if isinstance(preprocessing, Mapping) else preprocessing
            )
        else:
            recipe.update({f"entry {key}": entry.get(key) for key in _MODEL_ENTRY_KEYS})
        return recipe

    return _differences(identity(stored), identity(requested), "")


def version_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Library versions that differ between the run that made a group and this one."""
    return _differences(stored.get("versions", {}), requested.get("versions", {}), "")
