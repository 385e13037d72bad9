"""``fit_grid``: every (model, encoder setting, subject) fitted once, reused while nothing it depends on changed, and
combined into ``out/results.nc``. A model is one ``backbone:layer`` feature space or several joined by ``+``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import dask
import numpy as np
import xarray as xr

from encoders.challenge import list_images, list_subjects
from encoders.errors import InvalidArgumentError, MissingFeaturesError, ResultsError, check_output_folder
from encoders.fingerprint import subject_fingerprint
from encoders.grid.combination import (
    Combination,
    GridContext,
    features_identity,
    resolve_location,
)
from encoders.grid.results import (
    NETCDF_ENGINE,
    RESULTS_FILE,
    carry_ensembles,
    collect_results,
    load_results,
    write_atomic,
)
from encoders.grid.schedule import compute, print_progress, run_combination, summary
from encoders.grid.settings import DEFAULT_BANDED_RATIOS, EncoderSetting, Space, parse_spaces, spaces_name
from encoders.splits import DEVKIT_SEED
from featurestore.errors import MissingEntryError
from featurestore.store import open_features, open_store
from nsd.layout import subject_number

__all__ = ["COMBINATIONS_DIR", "fit_grid"]

COMBINATIONS_DIR = "combinations"


def _layers_by_depth(opened: Any, backbone: str) -> list[str]:
    """Stored layers in the catalog entry's order (shallow to deep), any others after them alphabetically."""
    order = list(opened.provenance(backbone).get("entry", {}).get("layers", []))
    stored = opened.layers(backbone)
    return [layer for layer in order if layer in stored] + [layer for layer in stored if layer not in order]


def _models(
    store: str, models: Iterable[str | Sequence[Any]] | None, backbones: Iterable[str] | None, storage_options
) -> list[tuple[Space, ...]]:
    """The feature spaces of each model: explicit models, or one model per layer of the given (or all) backbones."""
    if models is not None:
        spaces = [parse_spaces(m) for m in models]
        if backbones is not None:
            raise InvalidArgumentError("Give either models=('backbone:layer', ...) or backbones=(...), not both")
    else:
        opened = open_store(store, storage_options=storage_options)
        chosen = list(backbones) if backbones is not None else list(opened.backbones())
        spaces = [((backbone, layer),) for backbone in chosen for layer in _layers_by_depth(opened, backbone)]
    if not spaces:
        raise InvalidArgumentError(f"No models to fit: store {store!r} has no layers for backbones={backbones!r}")
    return list(dict.fromkeys(spaces))


def _check_spaces_share_images(
    store: str, spaces: tuple[Space, ...], needed: np.ndarray, storage_options: dict | None
) -> None:
    """A model of several spaces needs every training image in each space: name the ids one space lacks."""
    ids = {space: open_features(store, *space, storage_options=storage_options)["nsd_id"].values for space in spaces}
    for space in spaces:
        missing = np.setdiff1d(needed, ids[space])
        if missing.size:
            others = [
                f"{b}:{layer}"
                for b, layer in spaces
                if (b, layer) != space and not np.setdiff1d(missing, ids[(b, layer)]).size
            ]
            had = f" ({', '.join(others)} {'has' if len(others) == 1 else 'have'} them)" if others else ""
            raise MissingFeaturesError(
                f"model {spaces_name(spaces)!r}: feature space {space[0]}:{space[1]} lacks {missing.size} of the "
                f"{needed.size} training images{had}: NSD ids {missing[:10].tolist()}"
                f"{' ...' if missing.size > 10 else ''}; the spaces of a model need the same images: featurestore "
                f"extract --backbone {space[0]} --layers {space[1]} --store {store}"
            )


def _identity(store: str, spaces: tuple[Space, ...], storage_options: dict | None) -> Any:
    """`features_identity` of a model's spaces (one dict for one space, as before; a list for several); a space
    missing from the store is an error naming the model."""
    try:
        identities = [features_identity(store, backbone, layer, storage_options) for backbone, layer in spaces]
    except MissingEntryError as error:
        raise MissingFeaturesError(f"model {spaces_name(spaces)!r}: {error}") from error
    return identities[0] if len(spaces) == 1 else identities


def _same_as_concat(spaces: tuple[Space, ...], setting: EncoderSetting, settings: list[EncoderSetting]) -> bool:
    """A banded setting on a model of one space fits what the same setting with the concat join fits (one space,
    one penalty): skipped when that twin is in the grid too (``--join concat banded`` over single layers)."""
    if len(spaces) > 1 or setting.join != "banded":
        return False
    twin = replace(setting, join="concat", ratios=DEFAULT_BANDED_RATIOS, name=None)
    return any(replace(other, name=None) == twin for other in settings)


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
    models : iterable of "backbone:layer", "b:l1+b:l2", (backbone, layer) or a list of those, default=None
        Models to fit, each one feature space or several (fitted together as ``EncoderSetting.join`` says: PCA per
        space, concatenated, one ridge); None means every layer in the store of ``backbones`` (all backbones if
        None too), one model each.
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
    store, data_dir = resolve_location(store), resolve_location(data_dir)
    out = check_output_folder(out, "out")
    (out / COMBINATIONS_DIR).mkdir(exist_ok=True)
    settings = [EncoderSetting.from_value(s) for s in (settings if settings is not None else [EncoderSetting()])]
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise InvalidArgumentError(f"Encoder settings need distinct labels; got {labels} (give each a name=...)")
    subject_numbers = [subject_number(s) for s in (subjects if subjects is not None else list_subjects(data_dir))]
    ctx = GridContext(store, data_dir, split_seed, n_boot, level, boot_seed, storage_options)
    fingerprints = {number: subject_fingerprint(data_dir, number) for number in subject_numbers}
    model_spaces = _models(store, models, backbones, storage_options)
    identities = {spaces: _identity(store, spaces, storage_options) for spaces in model_spaces}
    if any(len(spaces) > 1 for spaces in model_spaces):
        needed = np.unique(np.concatenate([list_images(data_dir, n, "train")[0] for n in subject_numbers]))
        for spaces in model_spaces:
            if len(spaces) > 1:
                _check_spaces_share_images(store, spaces, needed, storage_options)
    combos = [
        Combination(spaces, setting, subject)
        for spaces in model_spaces
        for setting in settings
        if not _same_as_concat(spaces, setting, settings)
        for subject in subject_numbers
    ]
    paths = [
        out
        / COMBINATIONS_DIR
        / c.filename(c.key(features=identities[c.spaces], data=fingerprints[c.subject], **ctx.hash_fields()))
        for c in combos
    ]
    done, tasks = 0, []
    for combo, path in zip(combos, paths):
        if path.is_file():
            done += 1
            if progress:
                with xr.open_dataset(path, engine=NETCDF_ENGINE) as reused:
                    print_progress(done, len(combos), summary(combo, reused, skipped=True))
        else:
            key = f"fit-{path.stem}"
            tasks.append(dask.delayed(run_combination, pure=False)(combo, ctx, str(path), dask_key_name=key))
    compute(tasks, scheduler, n_workers, progress, done, len(combos))
    combinations = json.dumps(sorted(path.name for path in paths))
    results_path = out / RESULTS_FILE
    if not tasks and results_path.is_file():
        previous = load_results(results_path)
        same_inputs = (previous.attrs.get(k) for k in ("combinations", "store", "data_dir"))
        if tuple(same_inputs) == (combinations, store, data_dir):
            return previous  # nothing new: keep the file (and its time stamp) as it is
    attrs = dict(
        store=store,
        data_dir=data_dir,
        combinations=combinations,
        data_fingerprints=json.dumps({f"subj{n:02d}": f for n, f in fingerprints.items()}),
        boot_seed=boot_seed,
    )
    results = collect_results(paths, attrs=attrs)
    if results_path.is_file():  # ensembles added by `encoders ensemble` stay while their members are unchanged
        try:
            previous = load_results(results_path)
        except ResultsError:
            previous = None
        if previous is not None:
            results, dropped = carry_ensembles(previous, results)
            for model in dropped:
                print(f"{model}: dropped (members refitted or missing); rerun `encoders ensemble` for it", flush=True)
    write_atomic(results, results_path)
    return results
