"""The standard figures of a grid's results: accuracy on the surface, an ROI, ROI medians, layer x ROI, a response."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from encoders.challenge import ALL_VERTICES, RoiAtlas, load_subject
from encoders.ensemble import ENSEMBLE_BACKBONE
from encoders.grid import find_model
from encoders.leaderboard import banded_models, best_model, leaderboard, partition_table
from encoders.plots import (
    Surface,
    find_surface,
    plot_accuracy,
    plot_image_response,
    plot_layer_roi_heatmap,
    plot_partition_bars,
    plot_roi,
    plot_roi_medians,
    plot_winning_space,
)
from nsd.layout import HEMISPHERES

__all__ = ["write_figures"]


def _roi_table(results: xr.Dataset, model: str, subject: int) -> pd.DataFrame:
    """Median r per ROI (rows) and hemisphere (columns) of one model and subject, ROIs present on a hemisphere."""
    medians = results["roi_median"].sel(model=model, subject=subject).drop_sel(roi=ALL_VERTICES)
    table = medians.to_pandas().T
    return table.dropna(how="all")[list(HEMISPHERES)]


def _layer_heatmap_table(results: xr.Dataset, table: pd.DataFrame) -> pd.DataFrame:
    """Rows (backbone, layer) in the grid's order, columns = ROI; one setting (the first) so rows stay unique, then
    the ensembles (rows ``ensemble / <method>:<detail>``)."""
    first_setting = results["setting"].values[0]
    ensemble = table["backbone"] == ENSEMBLE_BACKBONE
    rows = table[(table["setting"] == first_setting) | ensemble].copy()
    rows.loc[ensemble, "layer"] = rows.loc[ensemble, "layer"] + ":" + rows.loc[ensemble, "setting"]
    rois = [r for r in results["roi"].values.tolist() if r in table.columns]
    frame = rows.set_index(["backbone", "layer"])[rois]
    order = [
        (backbone, layer if backbone != ENSEMBLE_BACKBONE else f"{layer}:{s}")
        for backbone, layer, s in zip(results["backbone"].values, results["layer"].values, results["setting"].values)
        if s == first_setting or backbone == ENSEMBLE_BACKBONE
    ]
    single = [row for row in order if row[0] != ENSEMBLE_BACKBONE]
    return frame.loc[single + [row for row in order if row[0] == ENSEMBLE_BACKBONE]]


def _winning_space(results: xr.Dataset, model: str, subject: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per hemisphere, the index of the space with the largest share of each vertex's validation R^2 (NaN where
    the joint R^2 is not positive: no space explains anything there), and the space names."""
    row = results.sel(model=model, subject=subject)
    names = [name for name in row["space_name"].values.tolist() if name]
    winners = {}
    for hemi in HEMISPHERES:
        n = int(row["n_vertices"].sel(hemisphere=hemi))
        share = row["r2_split"].sel(hemisphere=hemi).values[: len(names), :n]
        joint = row["r2_joint"].sel(hemisphere=hemi).values[:n]
        best = np.argmax(np.nan_to_num(share, nan=-np.inf), axis=0).astype(np.float64)
        winners[hemi] = np.where(joint > 0, best, np.nan)
    return winners, names


def _partition_figures(
    results: xr.Dataset, subject: int, atlas: RoiAtlas, out_dir: Path, surface: Surface
) -> list[Path]:
    """For the best banded model (if any): the winning space per vertex on the surface, a stacked bar per ROI."""
    banded = banded_models(results)
    if not banded:
        return []
    model = banded[0]
    winner, names = _winning_space(results, model, subject)
    title = f"Largest share of validation R², {model}"
    figures = plot_winning_space(winner, names, atlas, out_dir, title=title, surface=surface)
    rois = [roi for roi in results["roi"].values.tolist() if roi != ALL_VERTICES]
    table = partition_table(results, model, rois=rois)
    title = f"Variance partition (mean over subjects and hemispheres): {model}"
    figures.append(plot_partition_bars(table, out_dir / "partition_per_roi.png", title=title))
    return figures


def write_figures(
    results: xr.Dataset,
    out_dir: str | os.PathLike,
    *,
    model: str | None = None,
    subject: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """The standard figures of a grid: accuracy on the surface (PNG per hemisphere + interactive HTML) of one
    model, an ROI on the surface, median r per ROI LH vs RH, layer x ROI heatmap, one image's fMRI response; and
    when the results hold a banded model, for the best one: the winning space per vertex on the surface
    (``winning_space_{lh,rh}.png``) and the variance partition per ROI (``partition_per_roi.png``).

    ``model`` (an id or unique prefix, an ensemble too) defaults to the best model over all vertices, ``subject``
    to the first subject, ``data_dir`` to the one recorded in the results.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir or results.attrs["data_dir"])
    model = find_model(results, model) if model else best_model(results)
    subject = int(subject if subject is not None else results["subject"].values[0])
    atlas = RoiAtlas(data_dir, subject)
    surface = find_surface()
    short = model.split(":", 1)[1] if ":" in model else model
    row = results.sel(model=model, subject=subject)
    r = {
        hemi: row["r"].sel(hemisphere=hemi).values[: int(row["n_vertices"].sel(hemisphere=hemi))]
        for hemi in HEMISPHERES
    }
    figures = plot_accuracy(r, atlas, out_dir, name="accuracy", title=f"Validation r, {model}", surface=surface)
    roi = next((name for name in ("V1v", "FFA-1", "PPA") if atlas.mask("lh", name).any()), atlas.roi_names("lh")[0])
    figures.append(plot_roi(atlas, roi, out_dir / f"roi_{roi}.png", hemi="lh", surface=surface))
    figures.append(
        plot_roi_medians(
            _roi_table(results, model, subject),
            out_dir / "roi_medians.png",
            title=f"Median r per ROI: {short}, subj{subject:02d}",
        )
    )
    table = leaderboard(results, ceiling=False)
    figures.append(
        plot_layer_roi_heatmap(
            _layer_heatmap_table(results, table),
            out_dir / "layer_roi_heatmap.png",
            title="Median r (mean over subjects and hemispheres): layer x ROI",
        )
    )
    figures += _partition_figures(results, subject, atlas, out_dir, surface)
    data = load_subject(data_dir, subject, check_finite=False)
    response = {hemi: np.asarray(data.fmri[hemi][0]) for hemi in HEMISPHERES}
    figures.append(
        plot_image_response(
            data.train_images[0],
            response,
            atlas,
            out_dir / "image_response.png",
            title=f"subj{subject:02d} {data.train_images[0].name}: measured fMRI",
            surface=surface,
        )
    )
    return figures
