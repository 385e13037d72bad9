"""Ensembles of a fitted grid's models: the best model per ROI, the best per vertex, or a weighted average of the top
k per vertex, chosen by cross-validation inside each subject's training rows and scored on the validation rows like
any other model.

Why the choice never sees the validation rows. The grid scores every model on the devkit split's validation rows;
picking the winner per ROI by those scores and reporting its score on the same rows would flatter it. Here each
member is refitted on ``inner_folds`` folds of the training rows only (PCA + ridge, with its own alpha CV inside
each fold); its out-of-fold predictions give one cross-validated r per vertex, and the ensemble's choice (which model
per ROI or vertex, the top k and their weights) is made from those. Then each member that is used is fitted on all
training rows, predicts the validation rows, and the weighted predictions are scored as any model
(`encoders.grid.pipeline.score_validation`: r, ROI medians with bootstrap intervals on the grid's own resamples, the
challenge score), so the leaderboard, the report, ``encoders compare`` and the intervals treat it like the others.

What the grid keeps, and why members are refitted. A fitted combination keeps per-vertex validation r, not per-fold
predictions: out-of-fold predictions of the training rows are n_train x n_vertices per model and subject (about
1.3 GB of float32 on the full challenge data), too much to keep for every model in case it joins an ensemble. Refits
are cheap (the features are cached in the store; ridge solves all vertices at once): one ensemble costs
``inner_folds + 1`` fits per member and subject. The cross-validated r per vertex (a few hundred kB) is cached per
member and subject under ``cache_dir`` (``<results folder>/ensembles`` from the command line), keyed by the member's
combination file (so by everything that determines its fit) and the inner folds: a second method over the same
members costs only the final fits. Each member's training rows are read from the store once for all its folds, and
the fits run side by side, one per core, with torch on one thread each (as the grid runs its tasks): torch's own
threads split each small solve and wait on one another, several times slower on a busy machine.

What the results hold. The ensemble is a model ``ensemble:<method>:<detail>`` (backbone ``ensemble``); the variable
``ensemble_weight`` (ensemble, member, subject, hemisphere, vertex) holds each member's weight per vertex (1 or 0 for
the best-per methods), which is all `predict_ensemble_test` needs to refit the members on all training rows and
predict the test images; the recipe is in the attribute ``ensembles`` (JSON).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from dask.system import CPU_COUNT
from tqdm.auto import tqdm

from encoders.challenge import SubjectData, load_subject
from encoders.errors import InvalidArgumentError
from encoders.grid import find_model, model_recipe, predict_test, predict_validation
from encoders.grid.pipeline import (
    design_matrices,
    fit_encoder,
    results_context,
    score_validation,
    spaces_features,
    stacked_fmri,
)
from encoders.grid.results import NETCDF_ENGINE, add_models, combination_prefix, combine_parts, write_atomic
from encoders.scoring import pearson_r
from encoders.splits import devkit_split, kfold
from nsd.layout import HEMISPHERES, ROI_CLASSES, subject_number

__all__ = [
    "ENSEMBLE_BACKBONE",
    "ENSEMBLE_METHODS",
    "EnsembleRecipe",
    "ensemble_cache_dir",
    "fit_ensemble",
    "is_ensemble",
    "predict_ensemble_test",
    "predict_model_validation",
    "selection_weights",
]

ENSEMBLE_METHODS = ("best-per-roi", "best-per-vertex", "top-k-average")
ENSEMBLE_BACKBONE = "ensemble"
OUTSIDE_ROIS = "outside the class's ROIs"


@dataclass(frozen=True)
class EnsembleRecipe:
    """How an ensemble chooses among its members.

    Parameters
    ----------
    method : {"best-per-roi", "best-per-vertex", "top-k-average"}
        ``best-per-roi``: per subject and hemisphere, vertices grouped by their ROI in ``roi_class`` (those in no
        ROI of the class form one more group); each group takes the member with the highest median cross-validated
        r over its vertices. ``best-per-vertex``: each vertex takes the member with the highest cross-validated r.
        ``top-k-average``: each vertex averages the ``k`` members with the highest cross-validated r there, weighted
        by that r (negative r counts as 0; equal weights when none is positive).
    members : tuple of str
        Model ids of the results (fitted models, not ensembles).
    k : int, default=3
        Members averaged per vertex (``top-k-average`` only).
    roi_class : str, default="streams"
        ROI class whose ROIs group the vertices (``best-per-roi`` only); its ROIs do not overlap.
    inner_folds, inner_seed : int, default=5, 0
        The shuffled k-fold (`encoders.splits.kfold`) of each subject's training rows that gives the
        cross-validated r.
    """

    method: str
    members: tuple[str, ...]
    k: int = 3
    roi_class: str = "streams"
    inner_folds: int = 5
    inner_seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ENSEMBLE_METHODS:
            raise InvalidArgumentError(f"Unknown ensemble method={self.method!r}; expected one of {ENSEMBLE_METHODS}")
        if len(self.members) < 2:
            raise InvalidArgumentError(f"an ensemble needs at least 2 member models; got {list(self.members)}")
        if self.method == "top-k-average" and not 2 <= self.k <= len(self.members):
            raise InvalidArgumentError(
                f"top-k-average needs 2 <= k <= {len(self.members)} (the number of members); got k={self.k}"
            )
        if self.roi_class not in ROI_CLASSES:
            raise InvalidArgumentError(f"Unknown roi_class={self.roi_class!r}; expected one of {list(ROI_CLASSES)}")
        if isinstance(self.inner_folds, bool) or not isinstance(self.inner_folds, int) or self.inner_folds < 2:
            raise InvalidArgumentError(f"inner_folds must be an int >= 2; got {self.inner_folds!r}")

    @property
    def label(self) -> str:
        """The setting part of the model id, e.g. ``streams-cv5`` or ``k3-cv5``."""
        detail = {"best-per-roi": f"{self.roi_class}-", "top-k-average": f"k{self.k}-"}.get(self.method, "")
        return f"{detail}cv{self.inner_folds}"

    @property
    def model(self) -> str:
        """Model id ``ensemble:<method>:<label>``."""
        return f"{ENSEMBLE_BACKBONE}:{self.method}:{self.label}"


def is_ensemble(results: xr.Dataset, model: str) -> bool:
    """Whether ``model`` (id or unique prefix) is an ensemble of the results."""
    return find_model(results, model) in json.loads(results.attrs.get("ensembles", "{}"))


def _roi_groups(subject: SubjectData, roi_class: str) -> list[tuple[str, np.ndarray]]:
    """(name, mask over the stacked lh+rh vertices) per hemisphere and ROI of the class, plus the vertices in none."""
    n_lh, n_rh = (subject.fmri[hemi].shape[1] for hemi in HEMISPHERES)
    groups = []
    for hemi, start, n in (("lh", 0, n_lh), ("rh", n_lh, n_rh)):
        labels = subject.rois.labels(hemi, roi_class)
        names = subject.rois.mapping(roi_class)
        for label in np.unique(labels):
            mask = np.zeros(n_lh + n_rh, dtype=bool)
            mask[start : start + n] = labels == label
            groups.append((f"{hemi} {names.get(int(label), OUTSIDE_ROIS) if label else OUTSIDE_ROIS}", mask))
    return groups


def selection_weights(
    cv_r: np.ndarray, method: str, *, k: int = 3, groups: Sequence[tuple[str, np.ndarray]] | None = None
) -> np.ndarray:
    """Member weights per vertex from the members' cross-validated r.

    Parameters
    ----------
    cv_r : ndarray of shape (n_members, n_vertices)
        Cross-validated r of each member (NaN: never chosen over a finite r).
    method : {"best-per-roi", "best-per-vertex", "top-k-average"}
        See `EnsembleRecipe`.
    k : int, default=3
        Members averaged per vertex (``top-k-average``).
    groups : sequence of (name, bool mask of shape (n_vertices,)), default=None
        Vertex groups for ``best-per-roi`` (together covering every vertex once).

    Returns
    -------
    ndarray of shape (n_members, n_vertices)
        Non-negative weights summing to 1 per vertex; ties go to the member listed first.
    """
    score = np.where(np.isfinite(cv_r), cv_r, -np.inf)
    n_members, n_vertices = score.shape
    weights = np.zeros((n_members, n_vertices), dtype=np.float32)
    if method == "best-per-vertex":
        weights[np.argmax(score, axis=0), np.arange(n_vertices)] = 1.0
    elif method == "best-per-roi":
        covered = np.zeros(n_vertices, dtype=int)
        for _, mask in groups or ():
            covered += mask
            if mask.any():
                medians = [np.median(row[mask]) if np.isfinite(row[mask]).any() else -np.inf for row in score]
                weights[int(np.argmax(medians)), mask] = 1.0
        if not (covered == 1).all():
            raise InvalidArgumentError("best-per-roi needs groups that cover every vertex exactly once")
    elif method == "top-k-average":
        top = np.argsort(-score, axis=0, kind="stable")[:k]  # (k, n_vertices), best first
        chosen = np.take_along_axis(score, top, axis=0)
        positive = np.clip(np.where(np.isfinite(chosen), chosen, 0.0), 0.0, None)
        total = positive.sum(axis=0)
        share = np.where(total > 0, positive / np.where(total > 0, total, 1.0), 1.0 / k)
        np.put_along_axis(weights, top, share.astype(np.float32), axis=0)
    else:
        raise InvalidArgumentError(f"Unknown ensemble method={method!r}; expected one of {ENSEMBLE_METHODS}")
    return weights


def _cached_cv_r(
    results: xr.Dataset, member: str, subject: SubjectData, recipe: EnsembleRecipe, cache_dir: Path | None, ctx: Any
) -> np.ndarray:
    """A member's cross-validated r per stacked vertex on the subject's training rows (cached when possible)."""
    spaces, setting = model_recipe(results, member)
    names = json.loads(results.attrs.get("combinations", "[]"))
    prefix = combination_prefix(member, subject.subject)
    stem = next((n.removesuffix(".nc") for n in names if n.rsplit("__", 1)[0] == prefix), None)
    path = None
    if cache_dir is not None and stem is not None:
        path = cache_dir / f"{stem}__inner{recipe.inner_folds}-seed{recipe.inner_seed}.nc"
        if path.is_file():
            with xr.open_dataset(path, engine=NETCDF_ENGINE) as cached:
                return cached["cv_r"].values
    features = spaces_features(ctx.store, spaces, subject.train_ids, ctx.data_dir, ctx.storage_options)
    train_idx, _ = devkit_split(subject.n_train, ctx.split_seed)
    fmri = stacked_fmri(subject)[train_idx]
    out_of_fold = np.empty_like(fmri)
    # the training rows are read from the store once, not once per fold, unless too large for memory
    train_designs = design_matrices(features, train_idx, setting)
    in_memory = all(isinstance(d, np.ndarray) for d in train_designs)

    def fold_designs(rows: np.ndarray) -> list:
        return [d[rows] for d in train_designs] if in_memory else design_matrices(features, train_idx[rows], setting)

    for inner_train, inner_val in kfold(len(train_idx), recipe.inner_folds, seed=recipe.inner_seed):
        encoder = fit_encoder(fold_designs(inner_train), fmri[inner_train], setting)
        out_of_fold[inner_val] = encoder.predict(fold_designs(inner_val))
    cv_r = np.asarray(pearson_r(fmri, out_of_fold), dtype=np.float64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(xr.Dataset({"cv_r": ("vertex", cv_r)}, attrs=dict(member=member, subject=subject.subject)), path)
    return cv_r


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 while the fits run side by side, one task per core, then restored.

    The fits are small (hundreds of rows): torch's threads split each small solve across the cores and spin waiting
    for one another, which on a busy machine made each fit several times slower than on one thread.
    """
    import torch  # here, not at import: `import encoders` stays free of torch (test_package)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_parallel(tasks: Sequence[Callable[[], Any]], n_workers: int | None, bar: Any = None) -> list:
    """The tasks' results, in order, run on ``n_workers`` threads (None: one per core) with single-threaded torch;
    on an error or interrupt the tasks not started are dropped and the running ones finish (their caches stay)."""
    results: list = [None] * len(tasks)
    with _one_torch_thread(), ThreadPoolExecutor(n_workers or CPU_COUNT) as pool:
        futures = {pool.submit(task): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if bar is not None:
                    bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def _check_members(results: xr.Dataset, members: Iterable[str] | None) -> tuple[str, ...]:
    """Member model ids (default: every fitted model of the results), fitted models with one split."""
    known = json.loads(results.attrs.get("ensembles", "{}"))
    models = results["model"].values.tolist()
    chosen = [m for m in models if m not in known] if members is None else [find_model(results, m) for m in members]
    nested = [m for m in chosen if m in known]
    if nested:
        raise InvalidArgumentError(f"ensemble members must be fitted models, not ensembles; got {nested}")
    if len(set(chosen)) != len(chosen):
        raise InvalidArgumentError(f"ensemble members given twice: {chosen}")
    if "split_seed" in results.coords:
        seeds = {m: int(results["split_seed"].sel(model=m)) for m in chosen}
        if len(set(seeds.values())) > 1:
            by_seed = {seed: [m for m, s in seeds.items() if s == seed] for seed in sorted(set(seeds.values()))}
            raise InvalidArgumentError(
                "ensemble members were fitted with different train/validation splits ("
                + "; ".join(f"split seed {seed}: {names}" for seed, names in by_seed.items())
                + "); their validation rows differ, so no choice can be scored on rows it never saw: refit them "
                "with one --split-seed"
            )
    return tuple(chosen)


def fit_ensemble(
    results: xr.Dataset,
    method: str,
    *,
    k: int = 3,
    roi_class: str = "streams",
    members: Iterable[str] | None = None,
    inner_folds: int = 5,
    inner_seed: int = 0,
    store: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    n_workers: int | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """An ensemble of the results' models, chosen inside the training rows and scored on the validation rows.

    Parameters
    ----------
    results : xarray.Dataset
        Results of `encoders.grid.fit_grid` (`load_results`).
    method : {"best-per-roi", "best-per-vertex", "top-k-average"}
        See `EnsembleRecipe`.
    k, roi_class, inner_folds, inner_seed
        See `EnsembleRecipe`.
    members : iterable of str, default=None
        Model ids (or unique prefixes); None means every fitted model of the results.
    store, data_dir : str or path, default=None
        Feature store and data folder; None means those recorded in the results.
    cache_dir : str or path, default=None
        Where the members' cross-validated r are cached (None: not cached).
    n_workers : int, default=None
        Fits run side by side on this many threads, each with single-threaded torch (None: one per core).
    progress : bool, default=True
        A progress bar over the (subject, member) inner cross-validations, then the final fits.

    Returns
    -------
    xarray.Dataset
        ``results`` with the ensemble added as model ``ensemble:<method>:<label>`` (replacing one of that id), its
        weights in ``ensemble_weight`` and its recipe in the ``ensembles`` attribute.
    """
    recipe = EnsembleRecipe(method, _check_members(results, members), k, roi_class, inner_folds, inner_seed)
    ctx = results_context(results, store=store, data_dir=data_dir)
    cache = Path(cache_dir) if cache_dir is not None else None
    subjects = {int(s): load_subject(ctx.data_dir, int(s)) for s in results["subject"].values}
    pairs = [(number, member) for number in subjects for member in recipe.members]
    bar = tqdm(total=len(pairs), desc=recipe.model, disable=not progress)
    tasks = [partial(_cached_cv_r, results, member, subjects[number], recipe, cache, ctx) for number, member in pairs]
    cv_r = dict(zip(pairs, _run_parallel(tasks, n_workers, bar)))
    weights = {}
    for number, subject in subjects.items():
        groups = _roi_groups(subject, roi_class) if method == "best-per-roi" else None
        table = np.stack([cv_r[(number, member)] for member in recipe.members])
        weights[number] = selection_weights(table, method, k=k, groups=groups)
    validation = _weighted_validations(results, recipe.members, weights, ctx, n_workers, bar)
    bar.close()
    parts = []
    for number, subject in subjects.items():
        y_val, prediction = validation[number]
        attrs = dict(
            model=recipe.model,
            backbone=ENSEMBLE_BACKBONE,
            layer=method,
            spaces="",
            setting=json.dumps(asdict(recipe)),
            setting_label=recipe.label,
            backbone_provenance="{}",
            n_train=len(devkit_split(subject.n_train, ctx.split_seed)[0]),
            n_val=len(y_val),
        )
        parts.append(score_validation(y_val, prediction, subject, ctx, attrs))
    previous = results.drop_vars(["ensemble_weight", "ensemble", "member"], errors="ignore")
    added = add_models(previous, combine_parts(parts))
    recipes = json.loads(results.attrs.get("ensembles", "{}")) | {recipe.model: asdict(recipe)}
    added.attrs["ensembles"] = json.dumps(recipes)
    added["ensemble_weight"] = _weight_variable(results, recipe, weights, list(subjects))
    return added


def _weight_variable(
    results: xr.Dataset, recipe: EnsembleRecipe, weights: dict[int, np.ndarray], subjects: list[int]
) -> xr.DataArray:
    """``ensemble_weight`` (ensemble, member, subject, hemisphere, vertex): the results' earlier ensembles and this
    one; a member's weight is 0 in ensembles it is not part of, NaN past each hemisphere's vertices."""
    n_vertices = results["n_vertices"]
    values = np.full((1, len(recipe.members), len(subjects), 2, results.sizes["vertex"]), np.nan, np.float32)
    for s, number in enumerate(subjects):
        n_lh = int(n_vertices.sel(subject=number, hemisphere="lh"))
        n_rh = int(n_vertices.sel(subject=number, hemisphere="rh"))
        values[0, :, s, 0, :n_lh] = weights[number][:, :n_lh]
        values[0, :, s, 1, :n_rh] = weights[number][:, n_lh : n_lh + n_rh]
    new = xr.DataArray(
        values,
        dims=("ensemble", "member", "subject", "hemisphere", "vertex"),
        coords={"ensemble": [recipe.model], "member": list(recipe.members), "subject": subjects},
    )
    if "ensemble_weight" not in results:
        return new
    earlier = results["ensemble_weight"].drop_sel(ensemble=[recipe.model], errors="ignore")
    if not earlier.sizes["ensemble"]:
        return new
    return xr.concat([earlier, new], dim="ensemble", join="outer", fill_value=0.0)


def _member_weights(results: xr.Dataset, model: str, subject: int) -> dict[str, dict[str, np.ndarray]]:
    """{member: {hemisphere: weights}} of the members an ensemble uses for one subject (weight > 0 somewhere)."""
    model = find_model(results, model)
    table = results["ensemble_weight"].sel(ensemble=model, subject=subject)
    used = {}
    for member in table["member"].values.tolist():
        per_hemi = {
            hemi: np.nan_to_num(table.sel(member=member, hemisphere=hemi).values[: int(n)])
            for hemi, n in zip(HEMISPHERES, results["n_vertices"].sel(subject=subject).values)
        }
        if any(w.any() for w in per_hemi.values()):
            used[member] = per_hemi
    return used


def _weighted_validations(
    results: xr.Dataset,
    members: Sequence[str],
    weights: dict[int, np.ndarray],
    ctx: Any,
    n_workers: int | None = None,
    bar: Any = None,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{subject: (validation fMRI, weighted sum of the members' validation predictions)}, each member with a weight
    > 0 somewhere fitted on the subject's training rows; the fits run side by side (`_run_parallel`)."""
    used = [(number, m) for number, table in weights.items() for m, w in zip(members, table) if w.any()]
    if bar is not None:
        bar.total += len(used)
        bar.refresh()
    tasks = [partial(predict_validation, results, m, n, store=ctx.store, data_dir=ctx.data_dir) for n, m in used]
    fitted = dict(zip(used, _run_parallel(tasks, n_workers, bar)))
    out = {}
    for number, table in weights.items():
        y_val, total = None, None
        for member, weight in zip(members, table):
            if (number, member) in fitted:
                y_val, prediction = fitted[(number, member)]
                total = weight * prediction if total is None else total + weight * prediction
        out[number] = (y_val, np.asarray(total, dtype=np.float32))
    return out


def predict_model_validation(
    results: xr.Dataset,
    model: str,
    subject: int | str,
    *,
    store: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`encoders.grid.predict_validation` for any model of the results, an ensemble included -> (validation fMRI,
    predictions), lh then rh columns."""
    number = subject_number(subject)
    if not is_ensemble(results, model):
        return predict_validation(results, model, number, store=store, data_dir=data_dir)
    ctx = results_context(results, store=store, data_dir=data_dir)
    used = _member_weights(results, model, number)
    stacked = np.stack([np.concatenate([w[hemi] for hemi in HEMISPHERES]) for w in used.values()])
    return _weighted_validations(results, list(used), {number: stacked}, ctx)[number]


def predict_ensemble_test(
    results: xr.Dataset,
    model: str,
    *,
    store: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    subjects: Iterable[int | str] | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """An ensemble's test predictions: each member it uses refitted on all training rows of each subject
    (`encoders.grid.predict_test`), its test predictions weighted as chosen inside the training rows, summed.

    Returns ``{subject: {"lh": (n_test, n_lh) float32, "rh": ...}}``, ready for `write_submission`.
    """
    ctx = results_context(results, store=store, data_dir=data_dir)
    known = [int(s) for s in results["subject"].values]
    numbers = known if subjects is None else [subject_number(s) for s in subjects]
    absent = [n for n in numbers if n not in known]
    if absent:
        raise InvalidArgumentError(f"the ensemble was chosen for subjects {known}; not for {absent}")
    predictions = {}
    for number in numbers:
        total: dict[str, np.ndarray] = {}
        for member, weight in _member_weights(results, model, number).items():
            spaces, setting = model_recipe(results, member)
            member_test = predict_test(ctx.store, ctx.data_dir, spaces, setting=setting, subjects=[number])[number]
            for hemi in HEMISPHERES:
                total[hemi] = total.get(hemi, 0.0) + weight[hemi] * member_test[hemi]
        predictions[number] = {hemi: np.asarray(total[hemi], dtype=np.float32) for hemi in HEMISPHERES}
    return predictions


def ensemble_cache_dir(results_path: str | os.PathLike) -> Path:
    """``<results folder>/ensembles``: where the command line caches the members' cross-validated r."""
    path = Path(results_path)
    return (path if path.is_dir() else path.parent) / "ensembles"
