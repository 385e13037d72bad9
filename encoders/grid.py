"""Fit and score every (backbone, layer, encoder setting, subject) combination from the feature store.

Each combination is one dask task: read the subject's training-image features lazily from the store, split them
with the devkit's 90/10 split, PCA on the training rows, ridge with one alpha per vertex for both hemispheres in one
call, per-vertex Pearson r on the validation rows, ROI medians with bootstrap intervals, and the challenge score
on the validation rows (an estimate: the official one scores the test images). A finished combination is saved as
its own small netCDF file under ``out/combinations``, named by a hash of everything that determines it (recipe,
features, split, bootstrap, and a fingerprint of the subject's data files, `encoders.fingerprint`), and skipped on
rerun; the combined ``xarray.Dataset`` goes to ``out/results.nc``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from encoders.bootstrap import bootstrap_median_r
from encoders.challenge import (
    ALL_VERTICES,
    HEMISPHERES,
    ROI_CLASSES,
    SubjectData,
    list_subjects,
    load_subject,
    subject_number,
)
from encoders.pca import PCA
from encoders.ridge import CLOSED_FORM_CV, KernelRidgeCV, RidgeCV
from encoders.errors import (
    InvalidArgumentError,
    MissingFeaturesError,
    ResultsError,
    UnknownNameError,
    check_output_folder,
)
from encoders.fingerprint import subject_fingerprint
from encoders.scoring import challenge_score, pearson_r, roi_medians
from encoders.splits import DEVKIT_SEED, devkit_split
from featurestore.store import open_features, open_store

__all__ = [
    "DEFAULT_ALPHAS",
    "Combination",
    "EncoderSetting",
    "MissingFeaturesError",
    "find_model",
    "fit_grid",
    "load_results",
    "model_recipe",
    "parse_model",
    "predict_test",
    "predict_validation",
]

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 8, 11))
SOLVERS = ("primal", "kernel")
RESULTS_FILE = "results.nc"
# version of what a combination file holds; part of its key, so files of an older definition are refitted
# (2: challenge score with the official formula and fraction-unit ceilings, data fingerprints in the key)
RESULTS_SCHEMA = 2
COMBINATIONS_DIR = "combinations"
IN_MEMORY_BYTES = 2 * 2**30  # a subject's layer up to this size (as float32) is read into memory once
_NETCDF_ENGINE = "scipy"


@dataclass(frozen=True)
class EncoderSetting:
    """One encoder recipe: optional PCA, then ridge regression with the alpha chosen per vertex.

    Parameters
    ----------
    pca : int or None, default=100
        Number of principal components fitted on the training rows; None fits on the full features.
    solver : {"primal", "kernel"}, default="primal"
        Ridge in feature space (`RidgeCV`) or on the linear kernel (`KernelRidgeCV`, best without PCA when
        features outnumber images).
    alphas : tuple of float, default=DEFAULT_ALPHAS
        Ridge penalties tried per vertex; ``(0.0,)`` is ordinary least squares (the devkit's LinearRegression).
    cv : int, "loo" or "gcv", default=5
        Folds for choosing alpha, closed-form leave-one-out, or generalised cross-validation.
    name : str or None, default=None
        Label in model names; None builds one such as ``"pca100-ridge-cv5"`` or ``"pca50-ols"``.
    """

    pca: int | None = 100
    solver: str = "primal"
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    cv: int | str = 5
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(float(a) for a in np.atleast_1d(self.alphas)))
        if self.pca is not None and (isinstance(self.pca, bool) or int(self.pca) != self.pca or self.pca < 1):
            raise InvalidArgumentError(f"Invalid pca={self.pca!r} in EncoderSetting; expected a positive int or None")
        if self.solver not in SOLVERS:
            raise InvalidArgumentError(
                f"Unknown solver={self.solver!r} in EncoderSetting; expected one of {list(SOLVERS)}"
            )
        if not self.alphas or min(self.alphas) < 0 or not np.all(np.isfinite(self.alphas)):
            raise InvalidArgumentError(f"Invalid alphas={self.alphas!r} in EncoderSetting; expected finite values >= 0")
        if self.cv not in CLOSED_FORM_CV and (isinstance(self.cv, bool) or not isinstance(self.cv, int)
                                             or self.cv < 2):
            raise InvalidArgumentError(
                f"Invalid cv={self.cv!r} in EncoderSetting; expected an int >= 2, 'loo' or 'gcv'"
            )
        if self.name is not None and not re.fullmatch(r"[\w.+-]+", self.name):
            raise InvalidArgumentError(
                f"Invalid name={self.name!r} in EncoderSetting; use letters, digits, '.', '+', '-', '_'"
            )

    @classmethod
    def from_value(cls, value: EncoderSetting | Mapping[str, Any]) -> EncoderSetting:
        """An `EncoderSetting` from itself or a dict such as ``dict(pca=100, solver="primal", cv=5)``."""
        if isinstance(value, EncoderSetting):
            return value
        unknown = set(value) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise InvalidArgumentError(
                f"Unknown encoder setting keys {sorted(unknown)}; expected some of {list(cls.__dataclass_fields__)}"
            )
        return cls(**value)

    @property
    def label(self) -> str:
        """Short name used in model ids."""
        if self.name:
            return self.name
        features = f"pca{self.pca}" if self.pca else "full"
        if self.alphas == (0.0,):
            return f"{features}-ols"
        fold = self.cv if isinstance(self.cv, str) else f"cv{self.cv}"
        return f"{features}-{'ridge' if self.solver == 'primal' else 'kernel'}-{fold}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (stored in result files)."""
        return asdict(self) | {"alphas": list(self.alphas)}


def parse_model(model: str | Sequence[str]) -> tuple[str, str]:
    """``"backbone:layer"`` or ``(backbone, layer)`` -> ``(backbone, layer)``."""
    if isinstance(model, str):
        backbone, sep, layer = model.partition(":")
        if not sep or not backbone or not layer:
            raise InvalidArgumentError(
                f"Invalid model={model!r}; expected 'backbone:layer', e.g. 'alexnet:features.12'"
            )
        return backbone, layer
    if len(model) != 2:
        raise InvalidArgumentError(f"Invalid model={model!r}; expected a (backbone, layer) pair")
    return str(model[0]), str(model[1])


@dataclass(frozen=True)
class Combination:
    """One fit of the grid: a backbone layer, an encoder setting and a subject."""

    backbone: str
    layer: str
    setting: EncoderSetting
    subject: int

    @property
    def model(self) -> str:
        """Model id ``backbone:layer:setting`` (the ``model`` coordinate of the results)."""
        return f"{self.backbone}:{self.layer}:{self.setting.label}"

    def key(self, **context: Any) -> str:
        """Hash of everything that determines the result (so a changed recipe never reuses a stale file)."""
        spec = dict(
            backbone=self.backbone, layer=self.layer, setting=self.setting.to_dict(), subject=self.subject, **context
        )
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def filename(self, key: str) -> str:
        """File name of the finished combination: readable prefix plus the key."""
        safe = re.sub(r"[^\w.+-]+", "_", f"{self.model}__subj{self.subject:02d}")
        return f"{safe}__{key}.nc"


@dataclass(frozen=True)
class _Context:
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
            split_seed=self.split_seed, n_boot=self.n_boot, level=self.level, boot_seed=self.boot_seed,
            schema=RESULTS_SCHEMA,
        )


def _features_identity(store: str, backbone: str, layer: str, storage_options: dict | None) -> dict[str, Any]:
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


def _features_for(
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


def _stacked_fmri(subject: SubjectData) -> np.ndarray:
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


def _design(features: xr.DataArray, rows: np.ndarray | slice = slice(None)) -> Any:
    """Feature ``rows`` as float32 numpy when they fit in `IN_MEMORY_BYTES`, else lazy `_SynchronousRows`.

    Reading once into memory avoids re-reading row-chunked store data for every column block of the PCA; layers
    too large for that stay lazy and are streamed.
    """
    data = features.data[rows]
    if data.size * 4 <= IN_MEMORY_BYTES:
        return data.compute(scheduler="synchronous").astype(np.float32, copy=False)
    return _SynchronousRows(data)


def _fit_encoder(design: Any, fmri: np.ndarray, setting: EncoderSetting) -> tuple[Any, Any, int]:
    """PCA (optional) then ridge fitted on these rows -> (pca or None, ridge, number of ridge input features).

    ``setting.pca`` larger than min(n_rows, n_features) is cut to that (the value used is returned).
    """
    pca = None
    if setting.pca is not None:
        pca = PCA(n_components=min(setting.pca, *design.shape))
        design = pca.fit_transform(design)
    elif setting.solver == "primal":
        design = np.asarray(design[:], dtype=np.float32)
    estimator = RidgeCV if setting.solver == "primal" else KernelRidgeCV
    ridge = estimator(alphas=np.asarray(setting.alphas), cv=setting.cv).fit(design, fmri)
    return pca, ridge, int(design.shape[1])


def _predict(pca: Any, ridge: Any, design: Any) -> np.ndarray:
    """Predictions of fitted PCA + ridge for feature rows."""
    if pca is not None:
        design = pca.transform(design)
    elif isinstance(ridge, RidgeCV):
        design = np.asarray(design[:], dtype=np.float32)
    return np.asarray(ridge.predict(design), dtype=np.float32)


def _split_hemispheres(values: np.ndarray, subject: SubjectData) -> dict[str, np.ndarray]:
    """Undo `_stacked_fmri` along the last axis."""
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


def _validation_fit(
    combo: Combination, ctx: _Context, subject: SubjectData
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit on the devkit training split -> (validation fMRI, predictions, per-vertex alphas, fit facts)."""
    features = _features_for(
        ctx.store, combo.backbone, combo.layer, subject.train_ids, ctx.data_dir, ctx.storage_options
    )
    train_idx, val_idx = devkit_split(subject.n_train, ctx.split_seed)
    fmri = _stacked_fmri(subject)
    pca, ridge, n_components = _fit_encoder(_design(features, train_idx), fmri[train_idx], combo.setting)
    prediction = _predict(pca, ridge, _design(features, val_idx))
    facts = dict(
        n_train=len(train_idx), n_val=len(val_idx), n_features=int(features.shape[1]), n_components=n_components
    )
    return fmri[val_idx], prediction, np.asarray(ridge.best_alphas_, dtype=np.float64), facts


def _fit_combination(combo: Combination, ctx: _Context) -> xr.Dataset:
    """Fit and score one combination -> small Dataset (dims hemisphere, vertex, roi, boot)."""
    start = time.perf_counter()
    subject = load_subject(ctx.data_dir, combo.subject)
    y_val, prediction, alphas, facts = _validation_fit(combo, ctx, subject)
    r = np.asarray(pearson_r(y_val, prediction), dtype=np.float64)
    names, classes, groups = _roi_groups(subject)
    cis = bootstrap_median_r(
        y_val, prediction, groups=groups, n_boot=ctx.n_boot, level=ctx.level, seed=ctx.boot_seed + subject.subject
    )
    n_vertices = [subject.fmri[hemi].shape[1] for hemi in HEMISPHERES]
    per_hemi = {"r": _split_hemispheres(r, subject), "alpha": _split_hemispheres(alphas, subject)}

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


def _write_atomic(dataset: xr.Dataset, path: Path) -> None:
    """Write a netCDF file under a temporary name, then rename: a file that exists is complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dataset.to_netcdf(tmp, engine=_NETCDF_ENGINE)
    os.replace(tmp, path)


def _run_combination(combo: Combination, ctx: _Context, path: str) -> dict[str, Any]:
    """Task body: fit, save to ``path``, return a one-line summary for progress output."""
    dataset = _fit_combination(combo, ctx)
    _write_atomic(dataset, Path(path))
    return _summary(combo, dataset, skipped=False)


def _summary(combo: Combination, dataset: xr.Dataset, *, skipped: bool) -> dict[str, Any]:
    median = dataset["roi_median"].sel(roi=ALL_VERTICES).values
    return dict(
        model=combo.model,
        subject=combo.subject,
        median_r=float(np.nanmean(median)),
        seconds=float(dataset.attrs["fit_seconds"]),
        skipped=skipped,
    )


def _resolve_path(location: str | os.PathLike) -> str:
    """Absolute path for local folders (workers may run elsewhere); URLs such as ``s3://`` unchanged."""
    text = os.fspath(location)
    return text if "://" in text else str(Path(text).resolve())


def _layers_by_depth(opened: Any, backbone: str) -> list[str]:
    """Stored layers in the catalog entry's order (shallow to deep), any others after them alphabetically."""
    order = list(opened.provenance(backbone).get("entry", {}).get("layers", []))
    stored = opened.layers(backbone)
    return [layer for layer in order if layer in stored] + [layer for layer in stored if layer not in order]


def _models(
    store: str, models: Iterable[str | Sequence[str]] | None, backbones: Iterable[str] | None, storage_options
) -> list[tuple[str, str]]:
    """Explicit (backbone, layer) pairs, or every layer in the store of the given (or all) backbones."""
    if models is not None:
        pairs = [parse_model(m) for m in models]
        if backbones is not None:
            raise InvalidArgumentError("Give either models=('backbone:layer', ...) or backbones=(...), not both")
    else:
        opened = open_store(store, storage_options=storage_options)
        chosen = list(backbones) if backbones is not None else list(opened.backbones())
        pairs = [(backbone, layer) for backbone in chosen for layer in _layers_by_depth(opened, backbone)]
    if not pairs:
        raise InvalidArgumentError(f"No models to fit: store {store!r} has no layers for backbones={backbones!r}")
    return list(dict.fromkeys(pairs))


def _print_progress(done: int, total: int, summary: Mapping[str, Any]) -> None:
    state = "reused" if summary["skipped"] else f"{summary['seconds']:.1f} s"
    print(
        f"[{done}/{total}] {summary['model']} subj{summary['subject']:02d}: "
        f"median r {summary['median_r']:.3f} ({state})",
        flush=True,
    )


def _compute(tasks: list, scheduler: Any, n_workers: int | None, progress: bool, done: int, total: int) -> list:
    """Run delayed tasks on the threaded / process scheduler or a distributed cluster, printing progress."""
    if not tasks:
        return []
    client = _client_for(scheduler)
    if client is not None:
        import distributed

        futures = client.compute(tasks)
        results = []
        for future in distributed.as_completed(futures):
            results.append(future.result())
            if progress:
                _print_progress(done + len(results), total, results[-1])
        if isinstance(scheduler, str):
            client.close()
        return results
    name = {None: "threads"}.get(scheduler, scheduler)
    if name not in ("threads", "processes", "synchronous"):
        raise InvalidArgumentError(
            f"Unknown scheduler={scheduler!r}; expected None/'threads', 'processes', 'synchronous', "
            "a distributed.Client, a cluster, or a scheduler address such as 'tcp://host:8786'"
        )
    from dask.callbacks import Callback

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001 - dask's callback signature
            nonlocal done
            done += 1
            if progress:
                _print_progress(done, total, result)

    with _Progress():
        return list(dask.compute(*tasks, scheduler=name, num_workers=n_workers))


def _client_for(scheduler: Any):
    """A distributed Client for a Client, a cluster object or a scheduler address; None for local schedulers."""
    if scheduler is None or scheduler in ("threads", "processes", "synchronous"):
        return None
    import distributed

    if isinstance(scheduler, distributed.Client):
        return scheduler
    if hasattr(scheduler, "scheduler_address"):
        return distributed.Client(scheduler, set_as_default=False)
    if isinstance(scheduler, str) and "://" in scheduler:
        return distributed.Client(scheduler, set_as_default=False)
    return None


def fit_grid(
    store: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    models: Iterable[str | Sequence[str]] | None = None,
    backbones: Iterable[str] | None = None,
    subjects: Iterable[int | str] | None = None,
    settings: Iterable[EncoderSetting | Mapping[str, Any]] | None = None,
    out: str | os.PathLike = "encoder_results",
    split_seed: int = DEVKIT_SEED,
    n_boot: int = 1000,
    level: float = 0.95,
    boot_seed: int = 0,
    scheduler: Any = None,
    n_workers: int | None = None,
    storage_options: dict | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Fit and score every model x setting x subject; resumable; results also written to ``out/results.nc``.

    Parameters
    ----------
    store : str or path
        Feature store (local folder or fsspec URL such as ``s3://bucket/features.zarr``).
    data_dir : str or path
        Algonauts 2023 data folder (``subjXX/...``).
    models : iterable of "backbone:layer" or (backbone, layer), default=None
        Layers to fit; None means every layer in the store of ``backbones`` (all backbones if None too).
    backbones : iterable of str, default=None
        Backbones whose stored layers are all fitted (only without ``models``).
    subjects : iterable of int or "subjXX", default=None
        Subjects; None means every ``subjXX`` folder in ``data_dir``.
    settings : iterable of EncoderSetting or dict, default=None
        Encoder recipes; None means ``[EncoderSetting()]`` (PCA 100, ridge, 5-fold CV).
    out : str or path, default="encoder_results"
        Folder for per-combination files (``combinations/``) and ``results.nc``.
    split_seed : int, default=4
        Seed of the devkit 90/10 split: 4 is the seed notebook's (``rand_seed = 4``); 5 reproduces the copies
        of the tutorial that set 5.
    n_boot, level, boot_seed : int, float, int
        Bootstrap resamples, interval coverage and seed (subject number is added) for the ROI-median intervals.
    scheduler : None, "threads", "processes", "synchronous", distributed Client, cluster or address
        Where the combinations run; None is dask's threaded scheduler.
    n_workers : int, default=None
        Threads/processes of the local schedulers (None: dask's default).
    storage_options : dict, default=None
        fsspec options for a remote store.
    progress : bool, default=True
        Print one line per finished (or reused) combination.

    Returns
    -------
    xarray.Dataset
        See `collect_results`.
    """
    store, data_dir = _resolve_path(store), _resolve_path(data_dir)
    out = check_output_folder(out, "out")
    (out / COMBINATIONS_DIR).mkdir(exist_ok=True)
    settings = [EncoderSetting.from_value(s) for s in (settings if settings is not None else [EncoderSetting()])]
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise InvalidArgumentError(f"Encoder settings need distinct labels; got {labels} (give each a name=...)")
    subject_numbers = [subject_number(s) for s in (subjects if subjects is not None else list_subjects(data_dir))]
    ctx = _Context(store, data_dir, split_seed, n_boot, level, boot_seed, storage_options)
    fingerprints = {number: subject_fingerprint(data_dir, number) for number in subject_numbers}
    combos = [
        Combination(backbone, layer, setting, subject)
        for backbone, layer in _models(store, models, backbones, storage_options)
        for setting in settings
        for subject in subject_numbers
    ]
    identities = {
        (c.backbone, c.layer): _features_identity(store, c.backbone, c.layer, storage_options) for c in combos
    }
    paths = [
        out / COMBINATIONS_DIR / c.filename(
            c.key(features=identities[(c.backbone, c.layer)], data=fingerprints[c.subject], **ctx.hash_fields())
        )
        for c in combos
    ]
    done, tasks = 0, []
    for combo, path in zip(combos, paths):
        if path.is_file():
            done += 1
            if progress:
                with xr.open_dataset(path, engine=_NETCDF_ENGINE) as reused:
                    _print_progress(done, len(combos), _summary(combo, reused, skipped=True))
        else:
            key = f"fit-{path.stem}"
            tasks.append(dask.delayed(_run_combination, pure=False)(combo, ctx, str(path), dask_key_name=key))
    _compute(tasks, scheduler, n_workers, progress, done, len(combos))
    combinations = json.dumps(sorted(path.name for path in paths))
    results_path = out / RESULTS_FILE
    if not tasks and results_path.is_file():
        previous = load_results(results_path)
        same_inputs = (previous.attrs.get(k) for k in ("combinations", "store", "data_dir"))
        if tuple(same_inputs) == (combinations, store, data_dir):
            return previous  # nothing new: keep the file (and its time stamp) as it is
    attrs = dict(
        store=store, data_dir=data_dir, combinations=combinations,
        data_fingerprints=json.dumps({f"subj{n:02d}": f for n, f in fingerprints.items()}),
    )
    results = collect_results(paths, attrs=attrs)
    _write_atomic(results, results_path)
    return results


def collect_results(paths: Sequence[str | os.PathLike], attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Combine per-combination files into one Dataset.

    Variables: ``r`` and ``alpha`` (model, subject, hemisphere, vertex; NaN beyond ``n_vertices``),
    ``n_vertices`` (subject, hemisphere), ``roi_median`` / ``roi_median_low`` / ``roi_median_high``
    (model, subject, hemisphere, roi), ``roi_median_boot`` (..., boot), ``roi_n_vertices`` (subject, hemisphere,
    roi), ``val_challenge_score`` (model, subject, hemisphere; the challenge's formula, percent, on the validation
    rows with the test split's noise ceiling, so an estimate of the official test score; NaN without a ceiling),
    ``noise_ceiling`` (subject, hemisphere, vertex; fraction) and ``roi_noise_ceiling`` (subject, hemisphere, roi;
    median over the ROI of sqrt(ceiling), the largest r the noise allows) when known, ``n_components``
    (model, subject).
    Coordinates ``backbone``, ``layer``, ``setting`` along ``model`` and ``roi_class`` along ``roi``.
    Attributes: ``settings`` and ``provenance`` (JSON by label / backbone) plus ``attrs``.
    """
    parts = []
    for path in paths:
        with xr.open_dataset(path, engine=_NETCDF_ENGINE) as part:
            parts.append(part.load())
    if not parts:
        raise InvalidArgumentError("No finished combinations to collect")
    models = list(dict.fromkeys(p.attrs["model"] for p in parts))
    subjects = sorted({int(p.attrs["subject"]) for p in parts})
    roi_class = {r: c for p in parts for r, c in zip(p["roi"].values.tolist(), p["roi_class"].values.tolist())}
    class_rank = {name: rank for rank, name in enumerate(("all", *ROI_CLASSES))}
    rois = sorted(roi_class, key=lambda r: class_rank[roi_class[r]])  # stable: first-seen order within a class
    n_vertex = max(p.sizes["vertex"] for p in parts)
    n_boot = parts[0].sizes["boot"]
    shape_m = (len(models), len(subjects), 2)

    def full(shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else 0, dtype=dtype)

    arrays = {
        "r": full((*shape_m, n_vertex), np.float32),
        "alpha": full((*shape_m, n_vertex)),
        "roi_median": full((*shape_m, len(rois))),
        "roi_median_low": full((*shape_m, len(rois))),
        "roi_median_high": full((*shape_m, len(rois))),
        "roi_median_boot": full((*shape_m, len(rois), n_boot), np.float32),
        "val_challenge_score": full(shape_m),
        "n_components": full(shape_m[:2], np.int32),
    }
    per_subject = {
        "n_vertices": full((len(subjects), 2), np.int32),
        "roi_n_vertices": full((len(subjects), 2, len(rois)), np.int32),
        "noise_ceiling": full((len(subjects), 2, n_vertex), np.float32),
        "roi_noise_ceiling": full((len(subjects), 2, len(rois))),
        "n_train": full((len(subjects),), np.int32),
        "n_val": full((len(subjects),), np.int32),
    }
    meta: dict[str, dict[str, str]] = {"backbone": {}, "layer": {}, "setting": {}}
    settings, provenance = {}, {}
    for part in parts:
        m, s = models.index(part.attrs["model"]), subjects.index(int(part.attrs["subject"]))
        nv, roi_idx = part.sizes["vertex"], [rois.index(r) for r in part["roi"].values.tolist()]
        for name in ("r", "alpha"):
            arrays[name][m, s, :, :nv] = part[name].values
        for name in ("roi_median", "roi_median_low", "roi_median_high", "roi_median_boot"):
            arrays[name][m, s][:, roi_idx] = part[name].values
        arrays["val_challenge_score"][m, s] = part["val_challenge_score"].values
        arrays["n_components"][m, s] = part.attrs["n_components"]
        per_subject["n_vertices"][s] = part["n_vertices"].values
        per_subject["roi_n_vertices"][s][:, roi_idx] = part["roi_n_vertices"].values
        if "noise_ceiling" in part:
            per_subject["noise_ceiling"][s, :, :nv] = part["noise_ceiling"].values
            per_subject["roi_noise_ceiling"][s][:, roi_idx] = part["roi_noise_ceiling"].values
        per_subject["n_train"][s], per_subject["n_val"][s] = part.attrs["n_train"], part.attrs["n_val"]
        model = part.attrs["model"]
        meta["backbone"][model], meta["layer"][model] = part.attrs["backbone"], part.attrs["layer"]
        meta["setting"][model] = part.attrs["setting_label"]
        settings[part.attrs["setting_label"]] = json.loads(part.attrs["setting"])
        provenance[part.attrs["backbone"]] = json.loads(part.attrs["provenance"])
    dims = {
        "r": ("model", "subject", "hemisphere", "vertex"),
        "alpha": ("model", "subject", "hemisphere", "vertex"),
        "roi_median": ("model", "subject", "hemisphere", "roi"),
        "roi_median_low": ("model", "subject", "hemisphere", "roi"),
        "roi_median_high": ("model", "subject", "hemisphere", "roi"),
        "roi_median_boot": ("model", "subject", "hemisphere", "roi", "boot"),
        "val_challenge_score": ("model", "subject", "hemisphere"),
        "n_components": ("model", "subject"),
        "n_vertices": ("subject", "hemisphere"),
        "roi_n_vertices": ("subject", "hemisphere", "roi"),
        "noise_ceiling": ("subject", "hemisphere", "vertex"),
        "roi_noise_ceiling": ("subject", "hemisphere", "roi"),
        "n_train": ("subject",),
        "n_val": ("subject",),
    }
    values = arrays | per_subject
    if np.isnan(per_subject["noise_ceiling"]).all():
        values.pop("noise_ceiling")
        values.pop("roi_noise_ceiling")
    first = parts[0].attrs
    return xr.Dataset(
        {name: (dims[name], array) for name, array in values.items()},
        coords={
            "model": models,
            "backbone": ("model", [meta["backbone"][m] for m in models]),
            "layer": ("model", [meta["layer"][m] for m in models]),
            "setting": ("model", [meta["setting"][m] for m in models]),
            "subject": subjects,
            "hemisphere": list(HEMISPHERES),
            "roi": rois,
            "roi_class": ("roi", [roi_class[r] for r in rois]),
        },
        attrs=dict(
            settings=json.dumps(settings),
            provenance=json.dumps(provenance),
            split_seed=first["split_seed"],
            n_boot=first["n_boot"],
            level=first["level"],
            **(attrs or {}),
        ),
    )


def load_results(path: str | os.PathLike) -> xr.Dataset:
    """Open ``results.nc`` (or the folder holding it) fully into memory.

    Files written before the challenge score followed the official definition hold ``noise_normalized`` (and a
    percent-unit ``noise_ceiling``); those two are dropped with a warning, the rest reads as before.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ResultsError(f"No results file {path}; run `encoders fit` (or fit_grid) first")
    try:
        with xr.open_dataset(path, engine=_NETCDF_ENGINE) as results:
            results = results.load()
    except Exception as error:  # a damaged file fails in many ways inside the reader (IndexError, struct.error, ...)
        raise ResultsError(
            f"Cannot read results file {path} ({error}); it may be truncated: rerun `encoders fit` with the same "
            "--out to rebuild it from the finished combinations"
        ) from error
    if "noise_normalized" in results:
        warnings.warn(
            f"{path} was written by an older version: its noise-normalised score used another formula and units "
            "and is dropped; rerun `encoders fit` for the challenge score",
            UserWarning,
            stacklevel=2,
        )
        results = results.drop_vars([name for name in ("noise_normalized", "noise_ceiling") if name in results])
    return results


def find_model(results: xr.Dataset, model: str) -> str:
    """The full model id of ``model``: itself, or the one model whose id starts with ``model + ":"``."""
    models = results["model"].values.tolist()
    matches = [m for m in models if m == model] or [m for m in models if m.startswith(f"{model}:")]
    if len(matches) != 1:
        raise UnknownNameError(
            f"model {model!r} {'is ambiguous' if matches else 'is not in the results'}; "
            f"{'matches' if matches else 'models'}: {matches or models}"
        )
    return matches[0]


def model_recipe(results: xr.Dataset, model: str) -> tuple[str, str, EncoderSetting]:
    """(backbone, layer, encoder setting) of a model id (or unique prefix) of the results."""
    row = results.sel(model=find_model(results, model))
    setting = EncoderSetting(**json.loads(results.attrs["settings"])[str(row["setting"].values)])
    return str(row["backbone"].values), str(row["layer"].values), setting


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
    ctx = _Context(
        _resolve_path(store or results.attrs["store"]),
        _resolve_path(data_dir or results.attrs["data_dir"]),
        int(results.attrs["split_seed"]),
        int(results.attrs["n_boot"]),
        float(results.attrs["level"]),
        0,
        storage_options,
    )
    y_val, prediction, _, _ = _validation_fit(combo, ctx, load_subject(ctx.data_dir, combo.subject))
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
    store, data_dir = _resolve_path(store), _resolve_path(data_dir)
    numbers = [subject_number(s) for s in (subjects if subjects is not None else list_subjects(data_dir))]
    predictions = {}
    for number in numbers:
        subject = load_subject(data_dir, number)
        train = _features_for(store, backbone, layer, subject.train_ids, data_dir, storage_options)
        test = _features_for(store, backbone, layer, subject.test_ids, data_dir, storage_options)
        pca, ridge, _ = _fit_encoder(_design(train), _stacked_fmri(subject), setting)
        stacked = _predict(pca, ridge, _design(test))
        predictions[number] = _split_hemispheres(stacked, subject)
    return predictions
