"""The fit of one task: features of the subject's images read lazily, the devkit split, PCA + ridge, and the scores
of the validation rows (per-vertex r, ROI medians with bootstrap intervals, the challenge score estimate)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from encoders.bootstrap import bootstrap_median_r
from encoders.challenge import ALL_VERTICES, SubjectData, list_subjects, load_subject
from encoders.errors import MissingFeaturesError
from encoders.grid.combination import Combination, GridContext, resolve_location
from encoders.grid.results import model_recipe
from encoders.grid.settings import EncoderSetting, parse_model
from encoders.pca import PCA
from encoders.ridge import KernelRidgeCV, RidgeCV
from encoders.scoring import challenge_score, pearson_r, roi_medians
from encoders.splits import devkit_split
from featurestore.store import open_features, open_store
from nsd.layout import HEMISPHERES, subject_number

__all__ = ["IN_MEMORY_BYTES", "fit_combination", "predict_test", "predict_validation"]

IN_MEMORY_BYTES = 2 * 2**30  # a subject's layer up to this size (as float32) is read into memory once


def features_for(
    store: str, backbone: str, layer: str, ids: np.ndarray, data_dir: str, storage_options: dict | None
) -> xr.DataArray:
    """Lazy features of ``ids`` (in that order); a clear error when some were never extracted."""
    features = open_features(store, backbone, layer, storage_options=storage_options)
    missing = np.setdiff1d(ids, features["nsd_id"].values)
    if missing.size:
        raise MissingFeaturesError(
            f"store {store!r} has no {backbone}/{layer} features for {missing.size} of {len(np.unique(ids))} "
            f"images needed (e.g. NSD ids {missing[:5].tolist()}); extract them first: featurestore extract "
            f"--backbone {backbone} --layers {layer} --images {data_dir} --store {store}"
        )
    return features.sel(nsd_id=ids)


def stacked_fmri(subject: SubjectData) -> np.ndarray:
    """Both hemispheres side by side (lh then rh), so one ridge fit serves every vertex."""
    return np.concatenate([np.asarray(subject.fmri[hemi], dtype=np.float32) for hemi in HEMISPHERES], axis=1)


class _SynchronousRows:
    """Lazy feature rows whose block reads compute in the calling thread.

    A combination already runs as one task of the grid's scheduler; reads inside it must not start another
    scheduler (nested thread pools, or a distributed worker waiting on its own cluster). PCA and kernel ridge
    read blocks through ``__getitem__``, so they stream from here unchanged.
    """

    def __init__(self, data: Any) -> None:
        self._data = data
        self.shape, self.dtype, self.chunks = data.shape, data.dtype, data.chunks

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._data[key].compute(scheduler="synchronous"))


def design_matrix(features: xr.DataArray, rows: np.ndarray | slice = slice(None)) -> Any:
    """Feature ``rows`` as float32 numpy when they fit in `IN_MEMORY_BYTES`, else lazy `_SynchronousRows`.

    Reading once into memory avoids re-reading row-chunked store data for every column block of the PCA; layers
    too large for that stay lazy and are streamed.
    """
    data = features.data[rows]
    if data.size * 4 <= IN_MEMORY_BYTES:
        return data.compute(scheduler="synchronous").astype(np.float32, copy=False)
    return _SynchronousRows(data)


def fit_encoder(design: Any, fmri: np.ndarray, setting: EncoderSetting) -> tuple[Any, Any, int]:
    """PCA (optional) then ridge fitted on these rows -> (pca or None, ridge, number of ridge input features).

    ``setting.pca`` larger than min(n_rows, n_features) is cut to that (the value used is returned).
    """
    pca = None
    if setting.pca is not None:
        pca = PCA(n_components=min(setting.pca, *design.shape))
        design = pca.fit_transform(design)
    elif setting.ridge == "primal":
        design = np.asarray(design[:], dtype=np.float32)
    estimator = RidgeCV if setting.ridge == "primal" else KernelRidgeCV
    ridge = estimator(alphas=np.asarray(setting.alphas), cv=setting.cv).fit(design, fmri)
    return pca, ridge, int(design.shape[1])


def predict(pca: Any, ridge: Any, design: Any) -> np.ndarray:
    """Predictions of fitted PCA + ridge for feature rows."""
    if pca is not None:
        design = pca.transform(design)
    elif isinstance(ridge, RidgeCV):
        design = np.asarray(design[:], dtype=np.float32)
    return np.asarray(ridge.predict(design), dtype=np.float32)


def split_hemispheres(values: np.ndarray, subject: SubjectData) -> dict[str, np.ndarray]:
    """Undo `stacked_fmri` along the last axis."""
    n_lh = subject.fmri["lh"].shape[1]
    return {"lh": values[..., :n_lh], "rh": values[..., n_lh:]}


def _roi_groups(subject: SubjectData) -> tuple[list[str], dict[str, str], dict[tuple[str, str], np.ndarray]]:
    """ROI names (All vertices first), their classes, and masks over the stacked vertices per (hemi, roi)."""
    names: list[str] = [ALL_VERTICES]
    classes = {ALL_VERTICES: "all"}
    for roi_class in subject.rois.roi_classes():
        for hemi in HEMISPHERES:
            for name in subject.rois.roi_names(hemi, roi_class):
                if name not in classes:
                    names.append(name)
                    classes[name] = roi_class
    n_lh, n_rh = (subject.fmri[hemi].shape[1] for hemi in HEMISPHERES)
    groups = {}
    for hemi, (start, n) in zip(HEMISPHERES, ((0, n_lh), (n_lh, n_rh))):
        present = subject.rois.masks(hemi)
        for name in names:
            stacked = np.zeros(n_lh + n_rh, dtype=bool)
            stacked[start : start + n] = present.get(name, np.zeros(n, dtype=bool))
            groups[(hemi, name)] = stacked
    return names, classes, groups


def validation_fit(
    combo: Combination, ctx: GridContext, subject: SubjectData
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit on the devkit training split -> (validation fMRI, predictions, per-vertex alphas, fit facts)."""
    features = features_for(
        ctx.store, combo.backbone, combo.layer, subject.train_ids, ctx.data_dir, ctx.storage_options
    )
    train_idx, val_idx = devkit_split(subject.n_train, ctx.split_seed)
    fmri = stacked_fmri(subject)
    pca, ridge, n_components = fit_encoder(design_matrix(features, train_idx), fmri[train_idx], combo.setting)
    prediction = predict(pca, ridge, design_matrix(features, val_idx))
    facts = dict(
        n_train=len(train_idx), n_val=len(val_idx), n_features=int(features.shape[1]), n_components=n_components
    )
    return fmri[val_idx], prediction, np.asarray(ridge.best_alphas_, dtype=np.float64), facts


def fit_combination(combo: Combination, ctx: GridContext) -> xr.Dataset:
    """Fit and score one combination -> small Dataset (dims hemisphere, vertex, roi, boot)."""
    start = time.perf_counter()
    subject = load_subject(ctx.data_dir, combo.subject)
    y_val, prediction, alphas, facts = validation_fit(combo, ctx, subject)
    r = np.asarray(pearson_r(y_val, prediction), dtype=np.float64)
    names, classes, groups = _roi_groups(subject)
    cis = bootstrap_median_r(
        y_val, prediction, groups=groups, n_boot=ctx.n_boot, level=ctx.level, seed=ctx.boot_seed + subject.subject
    )
    n_vertices = [subject.fmri[hemi].shape[1] for hemi in HEMISPHERES]
    per_hemi = {"r": split_hemispheres(r, subject), "alpha": split_hemispheres(alphas, subject)}

    def padded(values: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.full((2, max(n_vertices)), np.nan)
        for i, hemi in enumerate(HEMISPHERES):
            out[i, : n_vertices[i]] = values[hemi]
        return out

    def per_roi(attribute: str) -> np.ndarray:
        return np.array([[getattr(cis[(hemi, name)], attribute) for name in names] for hemi in HEMISPHERES])

    medians = roi_medians(r, groups)

    ceiling = subject.noise_ceiling
    # a vertex whose chosen alpha flattens its prediction has r = NaN: it counts as 0, as challenge_score says
    challenge = [
        challenge_score(np.nan_to_num(per_hemi["r"][hemi]), ceiling[hemi])[1] if ceiling else np.nan
        for hemi in HEMISPHERES
    ]
    data_vars = {
        "r": (("hemisphere", "vertex"), padded(per_hemi["r"]).astype(np.float32)),
        "alpha": (("hemisphere", "vertex"), padded(per_hemi["alpha"])),
        "n_vertices": (("hemisphere",), np.array(n_vertices, dtype=np.int32)),
        "roi_median": (("hemisphere", "roi"), np.array([[medians[(h, n)] for n in names] for h in HEMISPHERES])),
        "roi_median_low": (("hemisphere", "roi"), per_roi("low")),
        "roi_median_high": (("hemisphere", "roi"), per_roi("high")),
        "roi_median_boot": (
            ("hemisphere", "roi", "boot"),
            np.stack([[cis[(hemi, name)].samples for name in names] for hemi in HEMISPHERES]).astype(np.float32),
        ),
        "roi_n_vertices": (
            ("hemisphere", "roi"),
            np.array([[groups[(hemi, name)].sum() for name in names] for hemi in HEMISPHERES], dtype=np.int32),
        ),
        "val_challenge_score": (("hemisphere",), np.array(challenge)),
    }
    if ceiling:
        data_vars["noise_ceiling"] = (("hemisphere", "vertex"), padded(ceiling).astype(np.float32))
        max_r = np.sqrt(np.concatenate([ceiling[hemi] for hemi in HEMISPHERES]))
        data_vars["roi_noise_ceiling"] = (
            ("hemisphere", "roi"),
            np.array([[_median_or_nan(max_r[groups[(hemi, name)]]) for name in names] for hemi in HEMISPHERES]),
        )
    provenance = open_store(ctx.store, storage_options=ctx.storage_options).provenance(combo.backbone)
    attrs = dict(
        model=combo.model,
        backbone=combo.backbone,
        layer=combo.layer,
        setting=json.dumps(combo.setting.to_dict()),
        setting_label=combo.setting.label,
        subject=subject.subject,
        split_seed=ctx.split_seed,
        n_boot=ctx.n_boot,
        level=ctx.level,
        provenance=json.dumps(provenance, sort_keys=True, default=str),
        fit_seconds=time.perf_counter() - start,
        **facts,
    )
    coords = {"hemisphere": list(HEMISPHERES), "roi": names, "roi_class": ("roi", [classes[n] for n in names])}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _median_or_nan(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else float("nan")


def predict_validation(
    results: xr.Dataset,
    model: str,
    subject: int | str,
    *,
    store: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    storage_options: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Refit a model of the results on its training split -> (validation fMRI, predictions), lh then rh columns.

    Used by paired comparisons; ``store`` and ``data_dir`` default to those recorded in the results.
    """
    combo = Combination(*model_recipe(results, model), subject_number(subject))
    ctx = GridContext(
        resolve_location(store or results.attrs["store"]),
        resolve_location(data_dir or results.attrs["data_dir"]),
        int(results.attrs["split_seed"]),
        int(results.attrs["n_boot"]),
        float(results.attrs["level"]),
        0,
        storage_options,
    )
    y_val, prediction, _, _ = validation_fit(combo, ctx, load_subject(ctx.data_dir, combo.subject))
    return y_val, prediction


def predict_test(
    store: str | os.PathLike,
    data_dir: str | os.PathLike,
    model: str | Sequence[str],
    *,
    setting: EncoderSetting | Mapping[str, Any] | None = None,
    subjects: Iterable[int | str] | None = None,
    storage_options: dict | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """Fit ``backbone:layer`` on all training images of each subject and predict its test images.

    Returns ``{subject: {"lh": (n_test, n_lh) float32, "rh": ...}}`` in test-file order, ready for
    `encoders.submission.write_submission`. The test images' features must be in the store.
    """
    backbone, layer = parse_model(model)
    setting = EncoderSetting.from_value(setting if setting is not None else EncoderSetting())
    store, data_dir = resolve_location(store), resolve_location(data_dir)
    numbers = [subject_number(s) for s in (subjects if subjects is not None else list_subjects(data_dir))]
    predictions = {}
    for number in numbers:
        subject = load_subject(data_dir, number)
        train = features_for(store, backbone, layer, subject.train_ids, data_dir, storage_options)
        test = features_for(store, backbone, layer, subject.test_ids, data_dir, storage_options)
        pca, ridge, _ = fit_encoder(design_matrix(train), stacked_fmri(subject), setting)
        stacked = predict(pca, ridge, design_matrix(test))
        predictions[number] = split_hemispheres(stacked, subject)
    return predictions
