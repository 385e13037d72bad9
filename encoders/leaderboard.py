"""Leaderboard tables from grid results: median r per model and ROI with bootstrap intervals, best layers, A vs B.

A leaderboard value is the mean over subjects and hemispheres of the ROI's median validation r. Its interval
averages the stored bootstrap medians resample by resample (both hemispheres of a subject share resamples, so
the interval is of the same mean), then takes percentiles.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from encoders.bootstrap import PairedBootstrap, paired_bootstrap, percentile_interval
from encoders.challenge import ALL_VERTICES, RoiAtlas
from encoders.ensemble import predict_model_validation
from encoders.errors import InvalidArgumentError, UnknownNameError
from encoders.grid import find_model
from nsd.layout import HEMISPHERES, subject_number

__all__ = [
    "CEILING_ROW",
    "Comparison",
    "best_layers",
    "best_model",
    "compare",
    "banded_models",
    "format_leaderboard",
    "format_partition",
    "leaderboard",
    "partition_table",
]

CEILING_ROW = "noise ceiling (max r)"
# the challenge's formula on validation rows with the test split's ceiling: an estimate of the official test score
CHALLENGE_SCORE = "challenge score % (val.)"
# printed by default: the overall median and the seven visual streams (the CSV has every ROI)
PRINTED_ROIS = (ALL_VERTICES, "early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal")


def _check_rois(results: xr.Dataset, rois: Iterable[str] | None) -> list[str]:
    """ROI names to tabulate (default: all), each checked against the results."""
    known = results["roi"].values.tolist()
    chosen = known if rois is None else list(rois)
    unknown = [r for r in chosen if r not in known]
    if unknown:
        raise UnknownNameError(f"ROIs {unknown} are not in the results; known ROIs: {known}")
    return chosen


def _select(results: xr.Dataset, subjects: Iterable[int | str] | None, hemispheres: Sequence[str]) -> xr.Dataset:
    """Restrict to some subjects and hemispheres."""
    bad = [h for h in hemispheres if h not in HEMISPHERES]
    if bad:
        raise InvalidArgumentError(f"Unknown hemispheres {bad}; expected some of {list(HEMISPHERES)}")
    selected = results.sel(hemisphere=list(hemispheres))
    if subjects is not None:
        selected = selected.sel(subject=[subject_number(s) for s in subjects])
    return selected


def _mean_over_subjects(values: xr.DataArray) -> xr.DataArray:
    """NaN-ignoring mean over subject and hemisphere, without warnings where everything is NaN."""
    stacked = values.stack(sh=("subject", "hemisphere"))
    count = stacked.notnull().sum("sh")
    return (stacked.fillna(0).sum("sh") / count).where(count > 0)


def leaderboard(
    results: xr.Dataset,
    *,
    rois: Iterable[str] | None = None,
    subjects: Iterable[int | str] | None = None,
    hemispheres: Sequence[str] = HEMISPHERES,
    ceiling: bool = True,
) -> pd.DataFrame:
    """Models ranked by median r (over all vertices by default), with per-ROI median r and bootstrap intervals.

    Parameters
    ----------
    results : xarray.Dataset
        Output of `encoders.grid.fit_grid` (or `load_results`).
    rois : iterable of str, default=None
        ROI columns; None means every ROI in the results ("All vertices" first). Rows are sorted by the first.
    subjects : iterable of int or str, default=None
        Subjects to average over; None means all.
    hemispheres : sequence of {"lh", "rh"}, default=("lh", "rh")
        Hemispheres to average over.
    ceiling : bool, default=True
        Add a last row with the median over vertices of sqrt(noise ceiling), the largest r the noise allows,
        when the data has a noise ceiling (``test_split/noise_ceiling``; the demo data has one).

    Returns
    -------
    pandas.DataFrame
        Index ``model``; columns ``backbone``, ``layer``, ``setting``, then per ROI ``<roi>``, ``<roi> low``,
        ``<roi> high``, then ``challenge score % (val.)``: the challenge's noise-normalised score (mean over all
        vertices of all subjects and hemispheres) computed on the validation images, an estimate of the official
        score on the test images (`encoders.evaluate`); NaN without a noise ceiling.
    """
    rois = _check_rois(results, rois)
    data = _select(results, subjects, hemispheres).sel(roi=rois)
    level = float(results.attrs.get("level", 0.95))
    medians = _mean_over_subjects(data["roi_median"])
    samples = _mean_over_subjects(data["roi_median_boot"])
    table = pd.DataFrame(
        {name: data[name].values for name in ("backbone", "layer", "setting")},
        index=pd.Index(data["model"].values, name="model"),
    )
    for roi in rois:
        table[roi] = medians.sel(roi=roi).values
        bounds = [percentile_interval(0.0, s, level) for s in samples.sel(roi=roi).values]
        table[f"{roi} low"] = [b.low for b in bounds]
        table[f"{roi} high"] = [b.high for b in bounds]
    if "val_challenge_score" in data:
        score = data["val_challenge_score"]
        weights = data["n_vertices"].where(score.notnull())
        total = weights.sum(("subject", "hemisphere"))
        table[CHALLENGE_SCORE] = ((score * weights).sum(("subject", "hemisphere")) / total).where(total > 0).values
    else:
        table[CHALLENGE_SCORE] = np.nan
    table = table.sort_values(rois[0], ascending=False, kind="stable")
    table.attrs["level"] = level
    if ceiling and "roi_noise_ceiling" in data:
        table.loc[CEILING_ROW] = _ceiling_row(data, rois, list(table.columns))
    return table


def _ceiling_row(data: xr.Dataset, rois: list[str], columns: list[str]) -> list:
    """Per ROI, the subject/hemisphere mean of the median over vertices of sqrt(noise ceiling)."""
    ceiling = _mean_over_subjects(data["roi_noise_ceiling"])
    row = dict.fromkeys(columns, np.nan) | {"backbone": "", "layer": "", "setting": ""}
    row |= {roi: float(ceiling.sel(roi=roi)) for roi in rois}
    return [row[c] for c in columns]


def format_leaderboard(table: pd.DataFrame, rois: Iterable[str] | None = None, digits: int = 3) -> str:
    """Printable text: one "r [low, high]" column per ROI (default: All vertices plus the stream ROIs)."""
    value_columns = [c for c in table.columns if c not in ("backbone", "layer", "setting", CHALLENGE_SCORE)]
    present = [c for c in value_columns if not c.endswith((" low", " high"))]
    if rois is None:
        rois = [r for r in present if r in PRINTED_ROIS]
    unknown = [r for r in rois if r not in present]
    if unknown:
        raise UnknownNameError(f"ROIs {unknown} are not in the leaderboard; its ROIs: {present}")
    shown = pd.DataFrame(index=table.index)
    for roi in rois:
        shown[roi] = [
            ""
            if np.isnan(value)
            else f"{value:.{digits}f}" + ("" if np.isnan(low) else f" [{low:.{digits}f}, {high:.{digits}f}]")
            for value, low, high in zip(table[roi], table[f"{roi} low"], table[f"{roi} high"])
        ]
    if table[CHALLENGE_SCORE].notna().any():
        shown[CHALLENGE_SCORE] = table[CHALLENGE_SCORE].map(lambda v: "" if np.isnan(v) else f"{v:.1f}")
    level = table.attrs.get("level", 0.95)
    return f"median r over validation images [bootstrap {level:.0%} interval]\n" + shown.to_string()


def best_model(results: xr.Dataset, roi: str = ALL_VERTICES) -> str:
    """Model id with the highest leaderboard value for ``roi``."""
    table = leaderboard(results, rois=[roi], ceiling=False)
    if table[roi].isna().all():
        raise InvalidArgumentError(f"No model has a finite median r for ROI {roi!r}")
    return str(table[roi].idxmax())


def banded_models(results: xr.Dataset) -> list[str]:
    """Ids of the models with a variance partition (banded join of several spaces), best median r first."""
    if "roi_r2_joint" not in results:
        return []
    has = results["roi_r2_joint"].notnull().any([d for d in results["roi_r2_joint"].dims if d != "model"])
    models = results["model"].values[has.values].tolist()
    table = leaderboard(results, rois=[ALL_VERTICES], ceiling=False)
    return [m for m in table.index if m in models]


def _banded_model(results: xr.Dataset, model: str | None) -> str:
    """The banded model named (id or unique prefix), or the best one; a clear error when there is none."""
    banded = banded_models(results)
    if not banded:
        raise InvalidArgumentError(
            "the results hold no banded model: fit one with `encoders fit --models B:L1+B:L2 --join banded`"
        )
    if model is None:
        return banded[0]
    model = find_model(results, model)
    if model not in banded:
        raise InvalidArgumentError(f"model {model!r} is not banded (no variance partition); banded models: {banded}")
    return model


def partition_table(
    results: xr.Dataset,
    model: str | None = None,
    *,
    rois: Iterable[str] | None = None,
    subjects: Iterable[int | str] | None = None,
    hemispheres: Sequence[str] = HEMISPHERES,
) -> pd.DataFrame:
    """Validation variance partition of a banded model per ROI (mean over subjects and hemispheres of the ROI means
    of `encoders.grid.banded`): ``R2 joint``, ``unique <space>``, ``shared`` (``R2 joint = sum unique + shared``),
    ``share <space>`` (the space's part of the joint R^2, `encoders.partition.r2_score_split`) and ``winner``
    (the space of the largest share). ``model`` defaults to the best banded model over all vertices."""
    model = _banded_model(results, model)
    rois = _check_rois(results, rois)
    data = _select(results, subjects, hemispheres).sel(model=model, roi=rois)
    names = [name for name in data["space_name"].values.tolist() if name]
    spaces = dict(space=np.arange(len(names)))
    table = pd.DataFrame(index=pd.Index(rois, name="roi"))
    table["R2 joint"] = _mean_over_subjects(data["roi_r2_joint"]).values
    unique = _mean_over_subjects(data["roi_unique_r2"].isel(spaces)).transpose("roi", "space").values
    share = _mean_over_subjects(data["roi_r2_split"].isel(spaces)).transpose("roi", "space").values
    for k, name in enumerate(names):
        table[f"unique {name}"] = unique[:, k]
    table["shared"] = _mean_over_subjects(data["roi_shared_r2"]).values
    for k, name in enumerate(names):
        table[f"share {name}"] = share[:, k]
    finite = np.isfinite(share).any(axis=1)
    table["winner"] = [names[int(np.nanargmax(row))] if ok else "" for row, ok in zip(share, finite)]
    table.attrs["model"] = model
    return table


def format_partition(table: pd.DataFrame, digits: int = 3) -> str:
    """Printable text of `partition_table`, with a line saying what the columns are."""
    shown = table.copy()
    for column in shown.columns[:-1]:
        shown[column] = shown[column].map(lambda v: "" if np.isnan(v) else f"{v:.{digits}f}")
    return (
        f"{table.attrs.get('model', '')}: validation R2 per ROI, mean over subjects and hemispheres; "
        "R2 joint = sum of unique + shared; share = each space's part of R2 joint\n" + shown.to_string()
    )


def best_layers(results: xr.Dataset, *, rois: Iterable[str] | None = None) -> pd.DataFrame:
    """Best layer per ROI for each backbone and setting.

    Returns
    -------
    pandas.DataFrame
        Columns ``backbone``, ``setting``, ``roi``, ``layer``, ``median r``, ``low``, ``high``, one row per
        (backbone, setting, ROI).
    """
    table = leaderboard(results, rois=rois, ceiling=False)
    rois = _check_rois(results, rois)
    rows = []
    for (backbone, setting), group in table.groupby(["backbone", "setting"], sort=False):
        for roi in rois:
            if group[roi].isna().all():
                continue
            best = group[roi].idxmax()
            rows.append(
                dict(
                    backbone=backbone,
                    setting=setting,
                    roi=roi,
                    layer=group.loc[best, "layer"],
                    **{"median r": group.loc[best, roi], "low": group.loc[best, f"{roi} low"]},
                    high=group.loc[best, f"{roi} high"],
                )
            )
    return pd.DataFrame(rows, columns=["backbone", "setting", "roi", "layer", "median r", "low", "high"])


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of model B against model A, per subject and for the mean over subjects.

    Attributes
    ----------
    a, b : str
        Model ids.
    roi : str
        ROI whose median r (over both hemispheres' vertices unless one was chosen) is compared.
    per_subject : dict of int to PairedBootstrap
    mean : PairedBootstrap
        Mean over subjects of the per-subject medians, resample by resample.
    """

    a: str
    b: str
    roi: str
    per_subject: dict[int, PairedBootstrap]
    mean: PairedBootstrap

    def to_frame(self) -> pd.DataFrame:
        """One row per subject plus "mean": median r of A and B, B - A with its interval, p-value."""
        rows = {f"subj{s:02d}": res for s, res in self.per_subject.items()} | {"mean": self.mean}
        return pd.DataFrame(
            {
                "A": [res.a.estimate for res in rows.values()],
                "B": [res.b.estimate for res in rows.values()],
                "B - A": [res.difference.estimate for res in rows.values()],
                "low": [res.difference.low for res in rows.values()],
                "high": [res.difference.high for res in rows.values()],
                "p (B <= A)": [res.p_value for res in rows.values()],
            },
            index=pd.Index(list(rows), name="subject"),
        )

    def __str__(self) -> str:
        verdict = (
            "B is better"
            if self.mean.difference.low > 0
            else ("A is better" if self.mean.difference.high < 0 else "no clear difference")
        )
        return (
            f"A = {self.a}\nB = {self.b}\nROI: {self.roi}; paired bootstrap over validation images\n"
            f"{self.to_frame().to_string(float_format=lambda v: f'{v:.4f}')}\n"
            f"=> {verdict} (interval of B - A, level {self.mean.difference.level:g})"
        )


def compare(
    results: xr.Dataset,
    a: str,
    b: str,
    *,
    roi: str = ALL_VERTICES,
    hemisphere: str | None = None,
    subjects: Iterable[int | str] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    store: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Comparison:
    """Is model B really better than model A? Paired bootstrap on the same resampled validation images.

    Both models are refitted on each subject's training split (`encoders.ensemble.predict_model_validation`: an
    ensemble's members refitted and weighted as it chose; from the store and data recorded in the results unless
    given) and their validation predictions scored on shared resamples.
    """
    numbers = [int(s) for s in results["subject"].values] if subjects is None else [subject_number(s) for s in subjects]
    data_dir = data_dir or results.attrs["data_dir"]
    per_subject = {}
    for number in numbers:
        y_val, pred_a = predict_model_validation(results, a, number, store=store, data_dir=data_dir)
        _, pred_b = predict_model_validation(results, b, number, store=store, data_dir=data_dir)
        atlas = RoiAtlas(data_dir, number)
        mask = np.concatenate([atlas.mask(hemi, roi) & (hemisphere in (None, hemi)) for hemi in HEMISPHERES])
        per_subject[number] = paired_bootstrap(
            y_val, pred_a, pred_b, mask=mask, n_boot=n_boot, level=level, seed=seed + number
        )
    mean = {
        name: percentile_interval(
            float(np.mean([getattr(res, name).estimate for res in per_subject.values()])),
            np.mean([getattr(res, name).samples for res in per_subject.values()], axis=0),
            level,
        )
        for name in ("a", "b", "difference")
    }
    diff = mean["difference"].samples
    p_value = float(np.mean(diff[np.isfinite(diff)] <= 0))
    return Comparison(
        find_model(results, a), find_model(results, b), roi, per_subject, PairedBootstrap(p_value=p_value, **mean)
    )
