"""Figures for encoding results: maps on the fsaverage surface, ROI medians, layer x ROI heatmaps.

Challenge-space values (one per challenge vertex) are scattered onto fsaverage through the subject's
all-vertices mask. The full fsaverage mesh (163,842 vertices per hemisphere) is used when nilearn already
has it on disk; otherwise the figures fall back to nilearn's bundled fsaverage5, whose 10,242 vertices are
the first 10,242 of fsaverage, and say on the figure how many challenge vertices that shows. Nothing is
downloaded. Every function writes files and returns their paths; figures are built without pyplot, so
the caller's matplotlib backend and open figures are left alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from nilearn import datasets, plotting
from nilearn.plotting.cm import cold_hot
from nilearn.surface import FileMesh, PolyMesh, SurfaceImage, load_surf_data
from PIL import Image

from encoders.challenge import FSAVERAGE_N_VERTICES, HEMISPHERES, RoiAtlas

FSAVERAGE5_N_VERTICES = 10242
SURFACE_VIEWS = ("lateral", "medial", "ventral", "posterior")
_NILEARN_HEMI = {"lh": "left", "rh": "right"}
_MESH_FILES = ("infl_left", "infl_right", "sulc_left", "sulc_right")
_ROI_COLOURS = ListedColormap(["#9db4d6", "#d62728"])


@dataclass(frozen=True)
class Surface:
    """A fsaverage mesh to draw on: inflated mesh and sulcal depth files per hemisphere."""

    name: str
    n_vertices: int
    inflated: dict[str, str]
    sulcal_depth: dict[str, str]


def find_surface(mesh: str = "auto", nilearn_data_dir: str | Path | None = None) -> Surface:
    """Full fsaverage if nilearn has it on disk (``mesh="auto"`` or ``"fsaverage"``), else fsaverage5.

    Only looks for files (``<nilearn data dir>/fsaverage/infl_left.gii.gz`` ...); never downloads.
    ``mesh="fsaverage"`` raises ``FileNotFoundError`` naming the folders searched when it is absent.
    """
    if mesh not in ("auto", "fsaverage", "fsaverage5"):
        raise ValueError(f"Unknown mesh={mesh!r}; expected one of ['auto', 'fsaverage', 'fsaverage5']")
    searched = [Path(folder) / "fsaverage" for folder in datasets.get_data_dirs(nilearn_data_dir)]
    if mesh != "fsaverage5":
        for folder in searched:
            files = {name: folder / f"{name}.gii.gz" for name in _MESH_FILES}
            if all(path.is_file() for path in files.values()):
                return _surface("fsaverage", FSAVERAGE_N_VERTICES, files)
        if mesh == "fsaverage":
            raise FileNotFoundError(
                f"Full fsaverage not found in {[str(f) for f in searched]} (files {list(_MESH_FILES)}.gii.gz); "
                "fetch it once with nilearn.datasets.fetch_surf_fsaverage('fsaverage') on a networked machine"
            )
    return _surface("fsaverage5", FSAVERAGE5_N_VERTICES, datasets.fetch_surf_fsaverage("fsaverage5"))


def _surface(name: str, n_vertices: int, files: Mapping[str, object]) -> Surface:
    """Surface from nilearn-style ``infl_left``/``sulc_left``... file entries."""
    return Surface(
        name=name,
        n_vertices=n_vertices,
        inflated={hemi: str(files[f"infl_{side}"]) for hemi, side in _NILEARN_HEMI.items()},
        sulcal_depth={hemi: str(files[f"sulc_{side}"]) for hemi, side in _NILEARN_HEMI.items()},
    )


def _on_surface(atlas: RoiAtlas, hemi: str, values: np.ndarray, surface: Surface) -> tuple[np.ndarray, int]:
    """Per-challenge-vertex values as a surface map (NaN off the challenge set) and how many are shown."""
    full = atlas.to_fsaverage(hemi, np.asarray(values, dtype=np.float32))
    return full[: surface.n_vertices], int(atlas.all_vertices(hemi)[: surface.n_vertices].sum())


def _coverage_note(atlas: RoiAtlas, surface: Surface, shown: Mapping[str, int]) -> str | None:
    """'fsaverage5 fallback: N of M challenge vertices shown' when the mesh is not the full fsaverage."""
    if surface.n_vertices == FSAVERAGE_N_VERTICES:
        return None
    total = sum(atlas.n_vertices(hemi) for hemi in shown)
    return f"{surface.name} fallback: {sum(shown.values())} of {total} challenge vertices shown"


def _view_axes(fig: Figure, n_columns: int, columns: Sequence[int]) -> list:
    """3-D axes at the given 1-based positions of a one-row grid."""
    return [fig.add_subplot(1, n_columns, column, projection="3d") for column in columns]


def _draw_views(
    fig: Figure, axes: Sequence, surface: Surface, hemi: str, surf_map: np.ndarray, views: Sequence[str], **style
) -> None:
    """Draw ``surf_map`` on ``hemi`` in each of ``views`` (one 3-D axes per view), without colorbars."""
    for ax, view in zip(axes, views):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="nilearn")
            plotting.plot_surf(
                surf_mesh=surface.inflated[hemi],
                surf_map=surf_map,
                bg_map=surface.sulcal_depth[hemi],
                hemi=_NILEARN_HEMI[hemi],
                view=view,
                axes=ax,
                figure=fig,
                colorbar=False,
                **style,
            )
        ax.set_title(f"{hemi} {view}", fontsize=9)


def _save(fig: Figure, out_path: Path, note: str | None = None) -> Path:
    """Write ``fig`` (with an optional footnote) as PNG."""
    if note:
        fig.text(0.01, 0.01, note, fontsize=8, color="dimgray", ha="left", va="bottom")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    return out_path


def _symmetric_limit(values: Mapping[str, np.ndarray], vmax: float | None) -> float:
    """Colour limit: ``vmax`` or the largest finite absolute value (1 if there is none)."""
    if vmax is not None:
        return float(vmax)
    finite = np.concatenate([np.abs(v[np.isfinite(v)]) for v in values.values()])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _colorbar(fig: Figure, cmap: Colormap, limit: float, label: str) -> None:
    """One shared symmetric colorbar at the right edge."""
    mappable = ScalarMappable(norm=Normalize(-limit, limit), cmap=cmap)
    fig.colorbar(mappable, ax=fig.axes, shrink=0.6, label=label)


def plot_accuracy(
    r: Mapping[str, np.ndarray],
    atlas: RoiAtlas,
    out_dir: str | Path,
    *,
    name: str = "accuracy",
    title: str = "Encoding accuracy",
    vmax: float | None = None,
    surface: Surface | None = None,
    engine: str = "niivue",
) -> list[Path]:
    """Per-vertex accuracy on the surface: ``<name>_lh.png``, ``<name>_rh.png`` and ``<name>.html``.

    ``r`` maps ``"lh"``/``"rh"`` to one value per challenge vertex. The PNGs show four views per
    hemisphere; the HTML is nilearn's interactive ``view_surf`` of both hemispheres (``engine="niivue"``
    needs no extra package, ``"plotly"`` needs plotly).
    """
    surface = surface or find_surface()
    out_dir = Path(out_dir)
    maps, shown = {}, {}
    for hemi in HEMISPHERES:
        maps[hemi], shown[hemi] = _on_surface(atlas, hemi, r[hemi], surface)
    note = _coverage_note(atlas, surface, shown)
    limit = _symmetric_limit(maps, vmax)
    paths = []
    for hemi in HEMISPHERES:
        fig = Figure(figsize=(16, 4.5))
        axes = _view_axes(fig, len(SURFACE_VIEWS), range(1, len(SURFACE_VIEWS) + 1))
        _draw_views(fig, axes, surface, hemi, maps[hemi], SURFACE_VIEWS, cmap=cold_hot, vmin=-limit, vmax=limit)
        _colorbar(fig, cold_hot, limit, "Pearson r")
        fig.suptitle(f"{title}: subj{atlas.subject:02d} {hemi}")
        paths.append(_save(fig, out_dir / f"{name}_{hemi}.png", note))
    paths.append(_view_html(atlas, surface, maps, out_dir / f"{name}.html", title, note, limit, engine))
    return paths


def _view_html(
    atlas: RoiAtlas,
    surface: Surface,
    maps: Mapping[str, np.ndarray],
    out_path: Path,
    title: str,
    note: str | None,
    limit: float,
    engine: str,
) -> Path:
    """Interactive both-hemisphere surface view saved as a standalone HTML file."""
    mesh = PolyMesh(**{side: FileMesh(surface.inflated[hemi]) for hemi, side in _NILEARN_HEMI.items()})
    # view_surf hides |value| < threshold: vertices off the challenge set are 0 and stay unpainted.
    data = {side: np.nan_to_num(maps[hemi], nan=0.0) for hemi, side in _NILEARN_HEMI.items()}
    depth = {side: load_surf_data(surface.sulcal_depth[hemi]) for hemi, side in _NILEARN_HEMI.items()}
    view = plotting.view_surf(
        surf_map=SurfaceImage(mesh=mesh, data=data),
        bg_map=SurfaceImage(mesh=mesh, data=depth),
        hemi="both",
        threshold=1e-14,
        cmap=cold_hot,
        vmax=limit,
        title=f"{title}: subj{atlas.subject:02d}" + (f" ({note})" if note else ""),
        engine=engine,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    view.save_as_html(out_path)
    return out_path


def plot_roi(
    atlas: RoiAtlas, roi: str, out_path: str | Path, *, hemi: str = "lh", surface: Surface | None = None
) -> Path:
    """One ROI (name or class) in red over the subject's other challenge vertices (blue) on ``hemi``."""
    surface = surface or find_surface()
    mask = atlas.mask(hemi, roi)
    if not mask.any():
        raise ValueError(
            f"ROI {roi!r} has no vertices in {hemi} of subj{atlas.subject:02d}; present: {atlas.roi_names(hemi)}"
        )
    surf_map, shown = _on_surface(atlas, hemi, mask.astype(np.float32), surface)
    in_view = int(atlas.mask(hemi, roi, space="fsaverage")[: surface.n_vertices].sum())
    fig = Figure(figsize=(16, 4.5))
    axes = _view_axes(fig, len(SURFACE_VIEWS), range(1, len(SURFACE_VIEWS) + 1))
    _draw_views(fig, axes, surface, hemi, surf_map, SURFACE_VIEWS, cmap=_ROI_COLOURS, vmin=0, vmax=1)
    fig.suptitle(f"subj{atlas.subject:02d} {hemi}: {roi} ({int(mask.sum())} vertices, red)")
    note = _coverage_note(atlas, surface, {hemi: shown})
    if note:
        note += f"; {in_view} of {int(mask.sum())} {roi} vertices shown"
    return _save(fig, Path(out_path), note)


def plot_image_response(
    image: str | Path | Image.Image,
    response: Mapping[str, np.ndarray],
    atlas: RoiAtlas,
    out_path: str | Path,
    *,
    title: str | None = None,
    surface: Surface | None = None,
) -> Path:
    """An image next to the fMRI response it evoked (measured or predicted) on both hemispheres."""
    surface = surface or find_surface()
    picture = image if isinstance(image, Image.Image) else Image.open(image).convert("RGB")
    maps, shown = {}, {}
    for hemi in HEMISPHERES:
        maps[hemi], shown[hemi] = _on_surface(atlas, hemi, response[hemi], surface)
    limit = _symmetric_limit(maps, None)
    views = ("ventral", "posterior")
    n_columns = 1 + len(HEMISPHERES) * len(views)
    fig = Figure(figsize=(17, 4))
    image_ax = fig.add_subplot(1, n_columns, 1)
    image_ax.imshow(picture)
    image_ax.set_axis_off()
    image_ax.set_title(title or (Path(image).name if not isinstance(image, Image.Image) else "image"), fontsize=9)
    for h, hemi in enumerate(HEMISPHERES):
        first = 2 + h * len(views)
        axes = _view_axes(fig, n_columns, range(first, first + len(views)))
        _draw_views(fig, axes, surface, hemi, maps[hemi], views, cmap=cold_hot, vmin=-limit, vmax=limit)
    _colorbar(fig, cold_hot, limit, "response")
    return _save(fig, Path(out_path), _coverage_note(atlas, surface, shown))


def plot_roi_medians(
    medians: pd.DataFrame | Mapping[str, Mapping[str, float]],
    out_path: str | Path,
    *,
    title: str = "Median Pearson r per ROI",
) -> Path:
    """Bar chart of median r per ROI, LH next to RH (the Algonauts devkit figure).

    ``medians``: a DataFrame indexed by ROI with columns ``lh`` and ``rh``, or ``{"lh": {roi: r}, "rh": ...}``.
    ROIs keep their order; a ROI missing on one hemisphere (NaN) has no bar there.
    """
    table = medians if isinstance(medians, pd.DataFrame) else pd.DataFrame(medians)
    missing = [hemi for hemi in HEMISPHERES if hemi not in table.columns]
    if missing:
        raise ValueError(f"ROI medians need columns {list(HEMISPHERES)}; missing {missing} in {list(table.columns)}")
    positions = np.arange(len(table))
    width = 0.4
    fig = Figure(figsize=(max(6.0, 0.45 * len(table) + 2), 4.5))
    ax = fig.add_subplot()
    for offset, hemi, colour in ((-width / 2, "lh", "#1f77b4"), (width / 2, "rh", "#ff7f0e")):
        ax.bar(positions + offset, table[hemi].to_numpy(dtype=float), width, label=hemi.upper(), color=colour)
    ax.set_xticks(positions, [str(roi) for roi in table.index], rotation=60, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("median Pearson r")
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    return _save(fig, Path(out_path))


def _heatmap_table(table: pd.DataFrame | xr.DataArray, roi_dim: str) -> pd.DataFrame:
    """Rows = model/layer, columns = ROI; a DataArray's other dims are stacked and all-NaN rows dropped."""
    if isinstance(table, xr.DataArray):
        if roi_dim not in table.dims:
            raise ValueError(f"Heatmap DataArray needs a {roi_dim!r} dim; got dims {table.dims}")
        rows = [dim for dim in table.dims if dim != roi_dim]
        frame = table.transpose(*rows, roi_dim).to_series().unstack(roi_dim)
        return frame.reindex(columns=table[roi_dim].values).dropna(how="all")
    return table


def plot_layer_roi_heatmap(
    table: pd.DataFrame | xr.DataArray,
    out_path: str | Path,
    *,
    title: str = "Median Pearson r: layer x ROI",
    roi_dim: str = "roi",
    cmap: str = "viridis",
) -> Path:
    """Heatmap of median r with one row per (backbone, layer) and one column per ROI.

    ``table``: a DataFrame (index = layer, or a (model, layer) MultiIndex; columns = ROIs) or a DataArray
    with a ``roi_dim`` dim (e.g. dims ``("model", "layer", "roi")``). Lines separate backbones.
    """
    frame = _heatmap_table(table, roi_dim)
    if frame.empty:
        raise ValueError("Heatmap table is empty (no rows with a value)")
    values = frame.to_numpy(dtype=float)
    labels = [" / ".join(map(str, row)) if isinstance(row, tuple) else str(row) for row in frame.index]
    fig = Figure(figsize=(max(6.0, 0.6 * values.shape[1] + 4), max(3.0, 0.35 * values.shape[0] + 2)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    ax.set_xticks(np.arange(values.shape[1]), [str(c) for c in frame.columns], rotation=60, ha="right")
    ax.set_yticks(np.arange(values.shape[0]), labels)
    if isinstance(frame.index, pd.MultiIndex):
        models = frame.index.get_level_values(0)
        for boundary in np.flatnonzero(models[1:] != models[:-1]):
            ax.axhline(boundary + 0.5, color="white", linewidth=2)
    if values.size <= 400:
        for (row, column), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label="median Pearson r")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, Path(out_path))


def plot_winning_space(
    winner: Mapping[str, np.ndarray],
    names: Sequence[str],
    atlas: RoiAtlas,
    out_dir: str | Path,
    *,
    name: str = "winning_space",
    title: str = "Space with the largest share of R²",
    surface: Surface | None = None,
) -> list[Path]:
    """A categorical surface map, ``<name>_lh.png`` and ``<name>_rh.png``: per challenge vertex the index into
    ``names`` of its winning feature space (NaN: none, left uncoloured), one colour per space with a legend."""
    from matplotlib.patches import Patch

    surface = surface or find_surface()
    colours = ListedColormap([f"C{k}" for k in range(len(names))])
    paths = []
    maps, shown = {}, {}
    for hemi in HEMISPHERES:
        maps[hemi], shown[hemi] = _on_surface(atlas, hemi, winner[hemi], surface)
    note = _coverage_note(atlas, surface, shown)
    for hemi in HEMISPHERES:
        fig = Figure(figsize=(16, 4.5))
        axes = _view_axes(fig, len(SURFACE_VIEWS), range(1, len(SURFACE_VIEWS) + 1))
        style = dict(cmap=colours, vmin=-0.5, vmax=len(names) - 0.5, avg_method="median")
        _draw_views(fig, axes, surface, hemi, maps[hemi], SURFACE_VIEWS, **style)
        handles = [Patch(color=f"C{k}", label=space) for k, space in enumerate(names)]
        fig.legend(handles=handles, loc="lower right", frameon=False)
        fig.suptitle(f"{title}: subj{atlas.subject:02d} {hemi}")
        paths.append(_save(fig, Path(out_dir) / f"{name}_{hemi}.png", note))
    return paths


def plot_partition_bars(table: pd.DataFrame, out_path: str | Path, *, title: str = "Variance partition") -> Path:
    """A stacked bar per ROI: the unique R² of each space and the shared R² (columns ``unique <space>`` and
    ``shared`` of `encoders.leaderboard.partition_table`; negative parts stack below 0), a dot at ``R2 joint``."""
    parts = [column for column in table.columns if column.startswith("unique ")] + ["shared"]
    missing = [column for column in (*parts, "R2 joint") if column not in table.columns]
    if missing or len(parts) < 2:
        raise ValueError(f"partition table needs columns 'unique <space>', 'shared', 'R2 joint'; got {list(table)}")
    frame = table.dropna(subset=["R2 joint"])
    positions = np.arange(len(frame))
    fig = Figure(figsize=(max(6.0, 0.45 * len(frame) + 2), 4.5))
    ax = fig.add_subplot()
    above, below = np.zeros(len(frame)), np.zeros(len(frame))
    for k, column in enumerate(parts):
        values = np.nan_to_num(frame[column].to_numpy(dtype=float))
        base = np.where(values >= 0, above, below)
        colour = "0.6" if column == "shared" else f"C{k}"
        ax.bar(positions, values, 0.7, bottom=base, color=colour, label=column)
        above, below = above + np.clip(values, 0, None), below + np.clip(values, None, 0)
    ax.plot(positions, frame["R2 joint"].to_numpy(dtype=float), "k.", label="R² joint")
    ax.set_xticks(positions, [str(roi) for roi in frame.index], rotation=60, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("validation R² (mean over the ROI's vertices)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out_path))
