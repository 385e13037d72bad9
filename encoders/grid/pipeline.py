"""The fit of one task: features of the subject's images read lazily, the devkit split, PCA + ridge (PCA per feature
space, side by side, for a model of several spaces), and the scores of the validation rows (per-vertex r, ROI
medians with bootstrap intervals, the challenge score estimate)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from encoders.bootstrap import bootstrap_median_r
from encoders.challenge import ALL_VERTICES, SubjectData, list_subjects, load_subject
from encoders.errors import MissingFeaturesError
from encoders.grid.banded import partition_validation
from encoders.grid.combination import Combination, GridContext, resolve_location
from encoders.grid.results import model_recipe
from encoders.grid.settings import EncoderSetting, Space, parse_spaces, spaces_name
from encoders.partition import partition_by_roi
from encoders.pca import PCA
from encoders.ridge import BandedRidgeCV, KernelRidgeCV, RidgeCV
from encoders.scoring import challenge_score, pearson_r, roi_medians
from encoders.splits import devkit_split
from featurestore.store import open_features, open_store
from nsd.layout import HEMISPHERES, subject_number

__all__ = [
    "IN_MEMORY_BYTES",
    "FittedEncoder",
    "fit_combination",
    "fit_encoder",
    "predict_test",
    "predict_validation",
    "score_validation",
]

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


def spaces_features(
    store: str, spaces: Sequence[Space], ids: np.ndarray, data_dir: str, storage_options: dict | None
) -> list[xr.DataArray]:
    """Lazy features of ``ids`` in each space, in the order of ``spaces``."""
    return [features_for(store, backbone, layer, ids, data_dir, storage_options) for backbone, layer in spaces]


def design_matrices(features: Sequence[xr.DataArray], rows: np.ndarray | slice, setting: EncoderSetting) -> list:
    """What `fit_encoder` takes: one design per space when PCA reduces each space or the join is banded, else one
    design of the raw features of all spaces side by side (a lazy concatenation, streamed like one large layer)."""
    if setting.pca is None and len(features) > 1 and setting.join != "banded":
        features = [xr.concat(features, dim=features[0].dims[1])]
    return [design_matrix(f, rows) for f in features]


@dataclass
class FittedEncoder:
    """PCA per space (or none) and the ridge fitted on the joined design; predicts from `design_matrices`.

    ``ridge`` is a `RidgeCV` / `KernelRidgeCV`, or a `BandedRidgeCV` whose spaces are the column blocks of the
    joined design (``widths``: one per space) for the banded join.
    """

    pcas: list | None
    ridge: Any
    n_components: int
    widths: tuple[int, ...] = ()

    @property
    def banded(self) -> bool:
        return isinstance(self.ridge, BandedRidgeCV)

    def design(self, designs: Sequence[Any]) -> Any:
        """The ridge's input for feature rows given as `design_matrices`: the joined (reduced) features."""
        if self.pcas is not None:
            return _join([pca.transform(d) for pca, d in zip(self.pcas, designs)])
        if self.banded:
            return _join([np.asarray(d[:], dtype=np.float32) for d in designs])
        return designs[0] if isinstance(self.ridge, KernelRidgeCV) else np.asarray(designs[0][:], np.float32)

    def predict(self, designs: Sequence[Any]) -> np.ndarray:
        """Predictions (float32) for feature rows given as `design_matrices`."""
        return np.asarray(self.ridge.predict(self.design(designs)), dtype=np.float32)


def _join(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """The spaces' (reduced) features side by side."""
    return blocks[0] if len(blocks) == 1 else np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks], 1)


def fit_encoder(designs: Sequence[Any], fmri: np.ndarray, setting: EncoderSetting) -> FittedEncoder:
    """PCA (optional, one per space) then one ridge on the joined design, fitted on these rows.

    ``setting.pca`` larger than min(n_rows, n_features) of a space is cut to that; ``n_components`` is the number
    of ridge input features (the sum over spaces). The banded join with several spaces fits a `BandedRidgeCV`
    with one penalty per space and vertex on the same columns (without PCA it reads the spaces into memory).
    """
    pcas = None
    if setting.pca is not None:
        pcas = [PCA(n_components=min(setting.pca, *d.shape)) for d in designs]
        blocks = [pca.fit_transform(d) for pca, d in zip(pcas, designs)]
    elif setting.join == "banded" or setting.ridge == "primal":
        blocks = [np.asarray(d[:], dtype=np.float32) for d in designs]
    else:
        blocks = designs
    widths = tuple(int(b.shape[1]) for b in blocks)
    design = _join(blocks)
    if setting.join == "banded" and len(blocks) > 1:
        ridge = BandedRidgeCV(
            spaces=list(widths),
            alphas=np.asarray(setting.alphas),
            ratios=setting.ratios,
            cv=setting.cv,
            solver=setting.ridge,
        ).fit(design, fmri)
    else:
        estimator = RidgeCV if setting.ridge == "primal" else KernelRidgeCV
        ridge = estimator(alphas=np.asarray(setting.alphas), cv=setting.cv).fit(design, fmri)
    return FittedEncoder(pcas, ridge, int(design.shape[1]), widths)


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
    combo: Combination, ctx: GridContext, subject: SubjectData, *, partition: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any], xr.Dataset | None]:
    """Fit on the devkit training split -> (validation fMRI, predictions, per-vertex alphas, fit facts, banded).

    ``banded`` is None unless the model is banded: then it holds each space's penalty per vertex
    (``space_penalty``, dims space, vertex over the stacked hemispheres) and, with ``partition``, the variance
    partition of the validation rows (`encoders.grid.banded.partition_validation`).
    """
    features = spaces_features(ctx.store, combo.spaces, subject.train_ids, ctx.data_dir, ctx.storage_options)
    train_idx, val_idx = devkit_split(subject.n_train, ctx.split_seed)
    fmri = stacked_fmri(subject)
    train_designs = design_matrices(features, train_idx, combo.setting)
    encoder = fit_encoder(train_designs, fmri[train_idx], combo.setting)
    val_designs = design_matrices(features, val_idx, combo.setting)
    prediction = encoder.predict(val_designs)
    facts = dict(
        n_train=len(train_idx),
        n_val=len(val_idx),
        n_features=int(sum(f.shape[1] for f in features)),
        n_components=encoder.n_components,
    )
    banded = None
    if encoder.banded:
        names = [f"{backbone}:{layer}" for backbone, layer in combo.spaces]
        penalty = np.asarray(encoder.ridge.best_penalties_, dtype=np.float64)
        banded = xr.Dataset({"space_penalty": (("space", "vertex"), penalty)}, coords={"space": names})
        if partition:
            parts = partition_validation(
                encoder.ridge,
                encoder.design(train_designs),
                fmri[train_idx],
                encoder.design(val_designs),
                fmri[val_idx],
                names,
            )
            banded = banded.merge(parts.drop_vars("vertex"))
    return fmri[val_idx], prediction, np.asarray(encoder.ridge.best_alphas_, dtype=np.float64), facts, banded


def fit_combination(combo: Combination, ctx: GridContext) -> xr.Dataset:
    """Fit and score one combination -> small Dataset (dims hemisphere, vertex, roi, boot; and space for a banded
    model: penalties and variance partition per vertex and per ROI)."""
    start = time.perf_counter()
    subject = load_subject(ctx.data_dir, combo.subject)
    y_val, prediction, alphas, facts, banded = validation_fit(combo, ctx, subject, partition=True)
    opened = open_store(ctx.store, storage_options=ctx.storage_options)
    provenance = {backbone: opened.provenance(backbone) for backbone in dict.fromkeys(b for b, _ in combo.spaces)}
    attrs = dict(
        model=combo.model,
        backbone=combo.backbone,
        layer=combo.layer,
        spaces=spaces_name(combo.spaces),
        setting=json.dumps(combo.setting.to_dict()),
        setting_label=combo.setting.label,
        backbone_provenance=json.dumps(provenance, sort_keys=True, default=str),
        **facts,
    )
    dataset = score_validation(y_val, prediction, subject, ctx, attrs)
    dataset["alpha"] = (("hemisphere", "vertex"), _padded(split_hemispheres(alphas, subject), subject))
    if banded is not None:
        dataset = dataset.merge(_banded_variables(banded, subject))
    dataset.attrs["fit_seconds"] = time.perf_counter() - start
    return dataset


def _banded_variables(banded: xr.Dataset, subject: SubjectData) -> xr.Dataset:
    """Per-vertex variables over the stacked vertices -> (…, hemisphere, vertex), and the partition's per-ROI means
    (`encoders.partition.partition_by_roi`: shares add up, so ``r2_joint = sum(unique_r2) + shared_r2`` per ROI
    too) as ``roi_<name>`` (…, hemisphere, roi)."""
    names, _, groups = _roi_groups(subject)
    variables = {}
    for name, variable in banded.data_vars.items():
        lead = variable.dims[:-1]
        rows = variable.values.reshape(-1, variable.shape[-1])
        padded = np.stack([_padded(split_hemispheres(row, subject), subject) for row in rows])
        variables[name] = ((*lead, "hemisphere", "vertex"), padded.reshape(*variable.shape[:-1], 2, -1))
    parts = banded.drop_vars("space_penalty")
    if parts.data_vars:
        per_hemi = [
            partition_by_roi(parts, {roi: groups[(hemi, roi)] for roi in names}).transpose(..., "roi")
            for hemi in HEMISPHERES
        ]
        for name in parts.data_vars:
            stacked = np.stack([p[name].values for p in per_hemi], axis=-2)
            variables[f"roi_{name}"] = ((*parts[name].dims[:-1], "hemisphere", "roi"), stacked)
    return xr.Dataset(variables, coords={"space": banded["space"].values, "hemisphere": list(HEMISPHERES)})


def _padded(values: Mapping[str, np.ndarray], subject: SubjectData) -> np.ndarray:
    """Per-hemisphere vertex values in one (hemisphere, max vertices) array, NaN past each hemisphere's end."""
    n_vertices = [subject.fmri[hemi].shape[1] for hemi in HEMISPHERES]
    out = np.full((2, max(n_vertices)), np.nan)
    for i, hemi in enumerate(HEMISPHERES):
        out[i, : n_vertices[i]] = values[hemi]
    return out


def score_validation(
    y_val: np.ndarray, prediction: np.ndarray, subject: SubjectData, ctx: GridContext, attrs: Mapping[str, Any]
) -> xr.Dataset:
    """A model's scores on the validation rows -> the Dataset of one combination (dims hemisphere, vertex, roi,
    boot): per-vertex r, ROI medians with bootstrap intervals on the grid's resamples, the challenge score.

    ``attrs`` name the model (``model``, ``backbone``, ``layer``, ``spaces``, ``setting``, ``setting_label``, ...);
    any model scored here (a fitted combination, an ensemble) sits in the results beside the others.
    """
    r = np.asarray(pearson_r(y_val, prediction), dtype=np.float64)
    names, classes, groups = _roi_groups(subject)
    cis = bootstrap_median_r(
        y_val, prediction, groups=groups, n_boot=ctx.n_boot, level=ctx.level, seed=ctx.boot_seed + subject.subject
    )
    n_vertices = [subject.fmri[hemi].shape[1] for hemi in HEMISPHERES]
    per_hemi = {"r": split_hemispheres(r, subject)}

    def padded(values: Mapping[str, np.ndarray]) -> np.ndarray:
        return _padded(values, subject)

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
    attrs = dict(attrs, subject=subject.subject, split_seed=ctx.split_seed, n_boot=ctx.n_boot, level=ctx.level)
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
    ctx = results_context(results, store=store, data_dir=data_dir, storage_options=storage_options)
    y_val, prediction, _, _, _ = validation_fit(combo, ctx, load_subject(ctx.data_dir, combo.subject))
    return y_val, prediction


def results_context(
    results: xr.Dataset,
    *,
    store: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    storage_options: dict | None = None,
) -> GridContext:
    """The grid inputs a results file was made with (store, data, split, bootstrap), or the store/data given."""
    return GridContext(
        resolve_location(store or results.attrs["store"]),
        resolve_location(data_dir or results.attrs["data_dir"]),
        int(results.attrs["split_seed"]),
        int(results.attrs["n_boot"]),
        float(results.attrs["level"]),
        int(results.attrs.get("boot_seed", 0)),
        storage_options,
    )


def predict_test(
    store: str | os.PathLike,
    data_dir: str | os.PathLike,
    model: str | Sequence[str],
    *,
    setting: EncoderSetting | Mapping[str, Any] | None = None,
    subjects: Iterable[int | str] | None = None,
    storage_options: dict | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """Fit a model (``backbone:layer``, or several spaces ``b:l1+b:l2``) on all training images of each subject and
    predict its test images.

    Returns ``{subject: {"lh": (n_test, n_lh) float32, "rh": ...}}`` in test-file order, ready for
    `encoders.submission.write_submission`. The test images' features must be in the store.
    """
    spaces = parse_spaces(model)
    setting = EncoderSetting.from_value(setting if setting is not None else EncoderSetting())
    store, data_dir = resolve_location(store), resolve_location(data_dir)
    numbers = [subject_number(s) for s in (subjects if subjects is not None else list_subjects(data_dir))]
    predictions = {}
    for number in numbers:
        subject = load_subject(data_dir, number)
        train = spaces_features(store, spaces, subject.train_ids, data_dir, storage_options)
        test = spaces_features(store, spaces, subject.test_ids, data_dir, storage_options)
        encoder = fit_encoder(design_matrices(train, slice(None), setting), stacked_fmri(subject), setting)
        stacked = encoder.predict(design_matrices(test, slice(None), setting))
        predictions[number] = split_hemispheres(stacked, subject)
    return predictions
