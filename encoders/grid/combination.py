"""One task of the grid (one or several feature spaces, a setting, a subject), its cache key, and the inputs every
task shares."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoders.grid.results import RESULTS_SCHEMA, combination_prefix
from encoders.grid.settings import SPACE_SEPARATOR, EncoderSetting, Space, spaces_name
from featurestore.store import open_store

__all__ = ["Combination", "GridContext", "features_identity", "resolve_location"]


@dataclass(frozen=True)
class Combination:
    """One fit of the grid: feature spaces (one ``(backbone, layer)`` or several), an encoder setting, a subject."""

    spaces: tuple[Space, ...]
    setting: EncoderSetting
    subject: int

    @property
    def backbone(self) -> str:
        """The backbone, or the distinct backbones of the spaces joined by ``+``."""
        return SPACE_SEPARATOR.join(dict.fromkeys(backbone for backbone, _ in self.spaces))

    @property
    def layer(self) -> str:
        """The layer, or the layers of the spaces joined by ``+``."""
        return SPACE_SEPARATOR.join(layer for _, layer in self.spaces)

    @property
    def model(self) -> str:
        """Model id ``backbone:layer:setting`` or ``b:l1+b:l2:setting`` (the ``model`` coordinate of the results)."""
        return f"{spaces_name(self.spaces)}:{self.setting.label}"

    def key(self, **context: Any) -> str:
        """Hash of everything that determines the result (so a changed recipe never reuses a stale file)."""
        what = (
            dict(backbone=self.backbone, layer=self.layer)
            if len(self.spaces) == 1
            else dict(spaces=[list(space) for space in self.spaces])
        )
        spec = dict(**what, setting=self.setting.to_dict(), subject=self.subject, **context)
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def filename(self, key: str) -> str:
        """File name of the finished combination: readable prefix plus the key."""
        return f"{combination_prefix(self.model, self.subject)}__{key}.nc"


@dataclass(frozen=True)
class GridContext:
    """Grid-wide inputs every combination task needs (picklable for process and distributed workers)."""

    store: str
    data_dir: str
    split_seed: int
    n_boot: int
    level: float
    boot_seed: int
    storage_options: dict | None = None

    def hash_fields(self) -> dict[str, Any]:
        return dict(
            split_seed=self.split_seed,
            n_boot=self.n_boot,
            level=self.level,
            boot_seed=self.boot_seed,
            schema=RESULTS_SCHEMA,
        )


def features_identity(store: str, backbone: str, layer: str, storage_options: dict | None) -> dict[str, Any]:
    """What makes a layer's features what they are (weights, preprocessing, dtype, reduction), for result keys."""
    opened = open_store(store, storage_options=storage_options)
    provenance = opened.provenance(backbone)
    layout = opened.layout(backbone, layer).attrs()
    return dict(
        weights=provenance.get("weights", {}).get("sha256"),
        preprocessing=provenance.get("preprocessing"),
        dtype=provenance.get("dtype"),
        layout={key: layout[key] for key in ("feature_shape", "reduce", "reduce_seed")},
    )


def resolve_location(location: str | os.PathLike) -> str:
    """Absolute path for local folders (workers may run elsewhere); URLs such as ``s3://`` unchanged."""
    text = os.fspath(location)
    return text if "://" in text else str(Path(text).resolve())
