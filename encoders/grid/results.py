"""The results of a grid: per-task files combined into one Dataset, read back, and models looked up in it."""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from encoders.errors import InvalidArgumentError, ResultsError, UnknownNameError
from encoders.grid.settings import EncoderSetting, Space, parse_spaces
from nsd.layout import HEMISPHERES, ROI_CLASSES

__all__ = [
    "RESULTS_FILE",
    "RESULTS_SCHEMA",
    "add_models",
    "carry_ensembles",
    "collect_results",
    "combination_prefix",
    "combine_parts",
    "find_model",
    "load_results",
    "model_recipe",
]

RESULTS_FILE = "results.nc"
# version of what a combination file holds; part of its key, so files of an older definition are refitted
# (2: challenge score with the official formula and fraction-unit ceilings, data fingerprints in the key)
RESULTS_SCHEMA = 2
NETCDF_ENGINE = "scipy"
# variables of a combination file that belong to the subject's data, not to the model fitted on it
_SUBJECT_VARIABLES = ("n_vertices", "roi_n_vertices", "noise_ceiling", "roi_noise_ceiling")


def write_atomic(dataset: xr.Dataset, path: Path) -> None:
    """Write a netCDF file under a temporary name, then rename: a file that exists is complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dataset.to_netcdf(tmp, engine=NETCDF_ENGINE)
    os.replace(tmp, path)


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
    Banded models (`EncoderSetting.join` ``"banded"``) add dim ``space`` (position of a feature space in the model;
    coordinate ``space_name`` along (model, space), ``""`` past a model's last space) and per vertex
    ``space_penalty`` (the penalty chosen per space; inf for a space the CV dropped), the validation variance
    partition ``r2_split`` (each space's share of the joint R^2), ``unique_r2`` (joint R^2 minus that of the refit
    without the space), ``r2_without_space`` (model, subject, space, hemisphere, vertex), ``r2_joint`` and
    ``shared_r2`` (model, subject, hemisphere, vertex), and their per-ROI means ``roi_r2_split``, ... (..., roi);
    NaN for other models.
    Coordinates ``backbone``, ``layer``, ``setting``, ``spaces`` (the model's ``backbone:layer`` feature spaces
    joined by ``+``) and ``split_seed`` along ``model``, and ``roi_class`` along ``roi``.
    Attributes: ``settings`` and ``provenance`` (JSON by label / backbone) plus ``attrs``.
    """
    parts = []
    for path in paths:
        with xr.open_dataset(path, engine=NETCDF_ENGINE) as part:
            parts.append(part.load())
    return combine_parts(parts, attrs)


def combine_parts(parts: Sequence[xr.Dataset], attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """`collect_results` of Datasets already in memory (one per model and subject, as `fit_combination` makes)."""
    if not parts:
        raise InvalidArgumentError("No finished combinations to collect")
    models = list(dict.fromkeys(p.attrs["model"] for p in parts))
    subjects = sorted({int(p.attrs["subject"]) for p in parts})
    roi_class = {r: c for p in parts for r, c in zip(p["roi"].values.tolist(), p["roi_class"].values.tolist())}
    class_rank = {name: rank for rank, name in enumerate(("all", *ROI_CLASSES))}
    rois = sorted(roi_class, key=lambda r: class_rank[roi_class[r]])  # stable: first-seen order within a class
    sizes = {
        "model": len(models),
        "subject": len(subjects),
        "hemisphere": len(HEMISPHERES),
        "roi": len(rois),
        "vertex": max(p.sizes["vertex"] for p in parts),
        "boot": parts[0].sizes["boot"],
        "space": max(p.sizes.get("space", 0) for p in parts),
    }
    values: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}

    def put(name: str, dims: tuple[str, ...], value: Any, at: dict[str, Any]) -> None:
        """Write one part's ``value`` into the combined array ``name`` (made on first use, NaN or 0 elsewhere)."""
        value = np.asarray(value)
        if name not in values:
            fill = np.nan if value.dtype.kind == "f" else 0
            values[name] = (dims, np.full([sizes[d] for d in dims], fill, dtype=value.dtype))
        array = values[name][1]
        scalar = tuple(at[d] for d in dims if d in ("model", "subject"))
        rest = tuple(at[d] for d in dims if d not in ("model", "subject"))
        if rest:  # index in two steps: the ROI list mixed with scalars would move the ROI axis first
            array[scalar][rest] = value
        else:
            array[scalar] = value

    meta: dict[str, dict[str, Any]] = {"backbone": {}, "layer": {}, "setting": {}, "spaces": {}, "split_seed": {}}
    settings, provenance, space_names = {}, {}, {}
    for part in parts:
        model = part.attrs["model"]
        at = {
            "model": models.index(model),
            "subject": subjects.index(int(part.attrs["subject"])),
            "hemisphere": slice(None),
            "roi": [rois.index(r) for r in part["roi"].values.tolist()],
            "vertex": slice(0, part.sizes["vertex"]),
            "boot": slice(None),
            "space": slice(0, part.sizes.get("space", 0)),
        }
        if "space" in part.dims:
            space_names[model] = part["space"].values.tolist()
        for name, variable in part.data_vars.items():
            owner = () if name in _SUBJECT_VARIABLES else ("model",)
            put(name, (*owner, "subject", *variable.dims), variable.values, at)
        put("n_components", ("model", "subject"), np.int32(part.attrs.get("n_components", 0)), at)
        put("n_train", ("subject",), np.int32(part.attrs["n_train"]), at)
        put("n_val", ("subject",), np.int32(part.attrs["n_val"]), at)
        meta["backbone"][model], meta["layer"][model] = part.attrs["backbone"], part.attrs["layer"]
        meta["setting"][model] = part.attrs["setting_label"]
        meta["spaces"][model] = part.attrs.get("spaces", f"{part.attrs['backbone']}:{part.attrs['layer']}")
        meta["split_seed"][model] = int(part.attrs["split_seed"])
        settings[part.attrs["setting_label"]] = json.loads(part.attrs["setting"])
        if "backbone_provenance" in part.attrs:
            provenance |= json.loads(part.attrs["backbone_provenance"])
        else:  # a file written before models could have several spaces
            provenance[part.attrs["backbone"]] = json.loads(part.attrs["provenance"])
    first = parts[0].attrs
    space_coords = {}
    if sizes["space"]:  # banded models: position k of dim space is the model's k-th feature space ("" past its last)
        names = [[*space_names.get(m, []), *[""] * sizes["space"]][: sizes["space"]] for m in models]
        space_coords = {"space": np.arange(sizes["space"]), "space_name": (("model", "space"), np.array(names))}
    return xr.Dataset(
        values,
        coords={
            "model": models,
            "backbone": ("model", [meta["backbone"][m] for m in models]),
            "layer": ("model", [meta["layer"][m] for m in models]),
            "setting": ("model", [meta["setting"][m] for m in models]),
            "spaces": ("model", [meta["spaces"][m] for m in models]),
            "split_seed": ("model", np.array([meta["split_seed"][m] for m in models], dtype=np.int64)),
            "subject": subjects,
            "hemisphere": list(HEMISPHERES),
            "roi": rois,
            "roi_class": ("roi", [roi_class[r] for r in rois]),
            **space_coords,
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
        with xr.open_dataset(path, engine=NETCDF_ENGINE) as results:
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


def model_recipe(results: xr.Dataset, model: str) -> tuple[tuple[Space, ...], EncoderSetting]:
    """(feature spaces, encoder setting) of a fitted model id (or unique prefix) of the results."""
    model = find_model(results, model)
    if model in json.loads(results.attrs.get("ensembles", "{}")):
        raise InvalidArgumentError(
            f"model {model!r} is an ensemble, not one fitted model; its predictions come from encoders.ensemble"
        )
    row = results.sel(model=model)
    spaces = str(row["spaces"].values) if "spaces" in row.coords else f"{row['backbone'].values}:{row['layer'].values}"
    setting = EncoderSetting.from_value(json.loads(results.attrs["settings"])[str(row["setting"].values)])
    return parse_spaces(spaces), setting


def add_models(results: xr.Dataset, extra: xr.Dataset) -> xr.Dataset:
    """``results`` with the models of ``extra`` (made by `combine_parts` for the same subjects) added along ``model``;
    a model already there is replaced. Variables ``extra`` lacks (``alpha``) are NaN for its models."""
    if extra["subject"].values.tolist() != results["subject"].values.tolist():
        raise InvalidArgumentError(
            f"cannot add models fitted on subjects {extra['subject'].values.tolist()} to results of subjects "
            f"{results['subject'].values.tolist()}"
        )
    kept = results.drop_sel(model=[m for m in extra["model"].values if m in results["model"].values])
    per_model = [name for name, variable in kept.data_vars.items() if "model" in variable.dims]
    added = extra[[name for name in per_model if name in extra]].reindex(roi=kept["roi"].values)
    for name in per_model:
        if name not in added:
            variable = kept[name]
            shape = [added.sizes["model"] if d == "model" else kept.sizes[d] for d in variable.dims]
            added[name] = (variable.dims, np.full(shape, np.nan if variable.dtype.kind == "f" else 0, variable.dtype))
    if "space_name" in kept.coords and "space_name" not in added.coords:  # no feature spaces of a banded model
        names = np.full((added.sizes["model"], kept.sizes["space"]), "", dtype=kept["space_name"].dtype)
        added = added.assign_coords(space=kept["space"].values, space_name=(("model", "space"), names))
    combined = xr.concat([kept[per_model], added], dim="model", coords="minimal", compat="override", join="exact")
    others = kept.drop_vars(per_model).drop_dims("model", errors="ignore")
    return xr.merge([combined, others], compat="override", combine_attrs="override")


def combination_prefix(model: str, subject: int) -> str:
    """The readable start of a combination file's name, ``<model>__subjXX`` made file-name safe."""
    return re.sub(r"[^\w.+-]+", "_", f"{model}__subj{subject:02d}")


def _member_files(results: xr.Dataset) -> dict[str, str]:
    """Combination file name per ``model__subjXX`` prefix (the file names hold everything that determined a fit)."""
    return {name.rsplit("__", 1)[0]: name for name in json.loads(results.attrs.get("combinations", "[]"))}


def carry_ensembles(previous: xr.Dataset, results: xr.Dataset) -> tuple[xr.Dataset, list[str]]:
    """``results`` with the ensembles of ``previous`` (the results file before a rerun of the grid) whose members
    were all reused unchanged, for the same subjects -> (results, ids of the ensembles dropped because not)."""
    recipes = json.loads(previous.attrs.get("ensembles", "{}"))
    if not recipes:
        return results, []
    before, now = _member_files(previous), _member_files(results)
    subjects = results["subject"].values.tolist()
    kept, dropped = {}, []
    for model, recipe in recipes.items():
        prefixes = [combination_prefix(member, subject) for member in recipe["members"] for subject in subjects]
        same = previous["subject"].values.tolist() == subjects and all(
            prefix in now and before.get(prefix) == now[prefix] for prefix in prefixes
        )
        if same:
            kept[model] = recipe
        else:
            dropped.append(model)
    if kept:
        results = add_models(results, previous.sel(model=list(kept)).drop_dims(["ensemble", "member"]))
        results["ensemble_weight"] = previous["ensemble_weight"].sel(ensemble=list(kept))
        results.attrs["ensembles"] = json.dumps(kept)
    return results, dropped
