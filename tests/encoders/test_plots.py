"""Figures: surface maps (PNG + interactive HTML), ROI, image response, ROI bars, layer x ROI heatmap."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from encoders import plots
from encoders.challenge import RoiAtlas, load_subject

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert len(data) > min_bytes, (path, len(data))


@pytest.fixture(scope="module")
def subject(algonauts_dir):
    return load_subject(algonauts_dir, 1)


@pytest.fixture(scope="module")
def fsaverage5():
    return plots.find_surface("fsaverage5")


@pytest.fixture
def drawn(monkeypatch):
    """The keyword arguments of every nilearn ``plot_surf`` call made by encoders.plots (nothing is drawn)."""
    calls = []
    monkeypatch.setattr(plots.plotting, "plot_surf", lambda **kwargs: calls.append(kwargs))
    return calls


@pytest.fixture
def viewed(monkeypatch):
    """The keyword arguments of every nilearn ``view_surf`` call; the view saves an empty page."""
    calls = []

    class View:
        def save_as_html(self, path):
            Path(path).write_text("")

    def view_surf(**kwargs):
        calls.append(kwargs)
        return View()

    monkeypatch.setattr(plots.plotting, "view_surf", view_surf)
    return calls


@pytest.fixture
def beyond_fsaverage5(algonauts_copy):
    """subj01 with five lh challenge vertices moved past fsaverage5's 10,242 (rh unchanged): (folder, atlas)."""
    path = algonauts_copy / "subj01" / "roi_masks" / "lh.all-vertices_fsaverage_space.npy"
    mask = np.load(path)
    mask[np.flatnonzero(mask)[:5]] = 0
    mask[20000:20005] = 1
    np.save(path, mask)
    return algonauts_copy, RoiAtlas(algonauts_copy, 1)


def _expected_map(folder, hemi, values, n_vertices=10242):
    """Challenge-space ``values`` scattered onto fsaverage through the mask file itself (NaN elsewhere), cut to the
    first ``n_vertices``: what the figure must show, computed without RoiAtlas."""
    mask = np.load(folder / "subj01" / "roi_masks" / f"{hemi}.all-vertices_fsaverage_space.npy").astype(bool)
    full = np.full(mask.size, np.nan, dtype=np.float32)
    full[np.flatnonzero(mask)] = values
    return full[:n_vertices]


def _assert_drawn(calls, surface, expected, views):
    """Each hemisphere drawn once per view, on its own mesh side and sulcal depth, with exactly its map."""
    sides = {"lh": "left", "rh": "right"}
    assert [(call["hemi"], call["view"]) for call in calls] == [(sides[h], v) for h in expected for v in views]
    for call in calls:
        hemi = {side: hemi for hemi, side in sides.items()}[call["hemi"]]
        assert call["surf_mesh"] == surface.inflated[hemi] and call["surf_mesh"].endswith(f"infl_{call['hemi']}.gii.gz")
        assert call["bg_map"] == surface.sulcal_depth[hemi] and call["bg_map"].endswith(f"sulc_{call['hemi']}.gii.gz")
        np.testing.assert_array_equal(call["surf_map"], expected[hemi])


def test_find_surface_falls_back_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NILEARN_DATA", raising=False)
    monkeypatch.delenv("NILEARN_SHARED_DATA", raising=False)
    surface = plots.find_surface("auto", nilearn_data_dir=tmp_path / "nilearn")
    assert (surface.name, surface.n_vertices) == ("fsaverage5", 10242)
    with pytest.raises(FileNotFoundError, match=r"Full fsaverage not found in .*nilearn/fsaverage"):
        plots.find_surface("fsaverage", nilearn_data_dir=tmp_path / "nilearn")


def test_find_surface_prefers_local_full_fsaverage(tmp_path):
    folder = tmp_path / "fsaverage"
    folder.mkdir()
    for name in ("infl_left", "infl_right", "sulc_left", "sulc_right"):
        (folder / f"{name}.gii.gz").write_bytes(b"")
    surface = plots.find_surface("auto", nilearn_data_dir=tmp_path)
    assert (surface.name, surface.n_vertices) == ("fsaverage", 163842)
    assert surface.inflated["rh"] == str(folder / "infl_right.gii.gz")


def test_plot_accuracy_writes_png_per_hemisphere_and_html(subject, fsaverage5, tmp_path):
    r = {hemi: np.linspace(-0.3, 0.8, subject.rois.n_vertices(hemi)) for hemi in ("lh", "rh")}
    paths = plots.plot_accuracy(r, subject.rois, tmp_path, surface=fsaverage5)
    assert [p.name for p in paths] == ["accuracy_lh.png", "accuracy_rh.png", "accuracy.html"]
    for png in paths[:2]:
        _assert_png(png)
    text = paths[2].read_text()
    assert text.startswith('<iframe srcdoc="')  # nilearn 0.14 saves views as a standalone inline frame
    page = html.unescape(text)
    assert "<html" in page.lower() and len(page) > 100_000
    assert "fsaverage5 fallback: 116 of 116 challenge vertices shown" in page


def test_fallback_note_counts_vertices_off_fsaverage5(algonauts_copy, fsaverage5, tmp_path):
    path = algonauts_copy / "subj01" / "roi_masks" / "lh.all-vertices_fsaverage_space.npy"
    mask = np.load(path)
    moved = np.flatnonzero(mask)[:5]
    mask[moved] = 0
    mask[20000:20005] = 1  # same count, five vertices beyond fsaverage5
    np.save(path, mask)
    atlas = RoiAtlas(algonauts_copy, 1)
    r = {hemi: np.full(atlas.n_vertices(hemi), 0.5) for hemi in ("lh", "rh")}
    html_path = plots.plot_accuracy(r, atlas, tmp_path, surface=fsaverage5)[-1]
    assert "fsaverage5 fallback: 111 of 116 challenge vertices shown" in html.unescape(html_path.read_text())


def test_accuracy_maps_handed_to_nilearn_are_the_atlas_mapping_of_r(
    beyond_fsaverage5, fsaverage5, drawn, viewed, tmp_path
):
    folder, atlas = beyond_fsaverage5
    r = {"lh": np.linspace(-0.3, 0.8, atlas.n_vertices("lh")), "rh": np.linspace(0.9, 0.1, atlas.n_vertices("rh"))}
    plots.plot_accuracy(r, atlas, tmp_path, surface=fsaverage5)
    expected = {hemi: _expected_map(folder, hemi, r[hemi]) for hemi in ("lh", "rh")}
    assert np.isfinite(expected["lh"]).sum() == atlas.n_vertices("lh") - 5  # five vertices lie beyond fsaverage5
    _assert_drawn(drawn, fsaverage5, expected, plots.SURFACE_VIEWS)
    (html_call,) = viewed
    assert html_call["hemi"] == "both"
    for hemi, side in (("lh", "left"), ("rh", "right")):
        assert html_call["surf_map"].mesh.parts[side].file_path == Path(fsaverage5.inflated[hemi])
        np.testing.assert_array_equal(html_call["surf_map"].data.parts[side], np.nan_to_num(expected[hemi], nan=0.0))


def test_roi_and_response_maps_handed_to_nilearn(beyond_fsaverage5, fsaverage5, drawn, tmp_path):
    folder, atlas = beyond_fsaverage5
    plots.plot_roi(atlas, "V1v", tmp_path / "v1v.png", hemi="rh", surface=fsaverage5)
    roi = atlas.mask("rh", "V1v").astype(np.float32)
    assert 0 < roi.sum() < roi.size
    _assert_drawn(drawn, fsaverage5, {"rh": _expected_map(folder, "rh", roi)}, plots.SURFACE_VIEWS)
    drawn.clear()
    response = {hemi: np.random.default_rng(3).standard_normal(atlas.n_vertices(hemi)) for hemi in ("lh", "rh")}
    image = Image.new("RGB", (8, 8))
    plots.plot_image_response(image, response, atlas, tmp_path / "resp.png", surface=fsaverage5)
    expected = {hemi: _expected_map(folder, hemi, response[hemi]) for hemi in ("lh", "rh")}
    _assert_drawn(drawn, fsaverage5, expected, ("ventral", "posterior"))


def test_plot_roi(subject, fsaverage5, tmp_path):
    _assert_png(plots.plot_roi(subject.rois, "V1v", tmp_path / "v1v.png", hemi="rh", surface=fsaverage5))
    _assert_png(plots.plot_roi(subject.rois, "streams", tmp_path / "streams.png", surface=fsaverage5))


def test_plot_roi_refuses_absent_roi(algonauts_dir, algonauts_spec, fsaverage5, tmp_path):
    subject, hemi, _, name = algonauts_spec.absent_roi
    with pytest.raises(ValueError, match=rf"ROI '{name}' has no vertices in {hemi} of subj02"):
        plots.plot_roi(RoiAtlas(algonauts_dir, subject), name, tmp_path / "x.png", hemi=hemi, surface=fsaverage5)
    assert not (tmp_path / "x.png").exists()


def test_plot_image_response(subject, fsaverage5, tmp_path):
    response = {hemi: np.asarray(subject.fmri[hemi][3]) for hemi in ("lh", "rh")}
    image = subject.train_images[3]
    _assert_png(plots.plot_image_response(image, response, subject.rois, tmp_path / "resp.png", surface=fsaverage5))


def test_plot_roi_medians_accepts_frame_and_mapping(tmp_path):
    medians = {"lh": {"All vertices": 0.3, "V1v": 0.5, "FFA-1": 0.2}, "rh": {"All vertices": 0.35, "V1v": 0.45}}
    _assert_png(plots.plot_roi_medians(medians, tmp_path / "bars.png"), min_bytes=2_000)
    _assert_png(plots.plot_roi_medians(pd.DataFrame(medians), tmp_path / "bars2.png"), min_bytes=2_000)
    with pytest.raises(ValueError, match=r"missing \['rh'\]"):
        plots.plot_roi_medians({"lh": {"V1v": 0.5}}, tmp_path / "bad.png")


def test_layer_roi_heatmap_from_frame_and_dataarray(tmp_path):
    rng = np.random.default_rng(0)
    index = pd.MultiIndex.from_tuples(
        [("alexnet", "features.2"), ("alexnet", "features.5"), ("ViT-B-32", "transformer.resblocks.11")],
        names=["model", "layer"],
    )
    frame = pd.DataFrame(rng.uniform(0, 0.6, (3, 4)), index=index, columns=["V1v", "FFA-1", "PPA", "All vertices"])
    _assert_png(plots.plot_layer_roi_heatmap(frame, tmp_path / "frame.png"), min_bytes=2_000)
    array = xr.DataArray(
        rng.uniform(0, 0.6, (2, 2, 3)),
        dims=("model", "layer", "roi"),
        coords={"model": ["alexnet", "vit"], "layer": ["a", "b"], "roi": ["V1v", "FFA-1", "PPA"]},
    )
    _assert_png(plots.plot_layer_roi_heatmap(array, tmp_path / "array.png"), min_bytes=2_000)
    with pytest.raises(ValueError, match=r"needs a 'roi' dim"):
        plots.plot_layer_roi_heatmap(array.rename(roi="region"), tmp_path / "bad.png")
