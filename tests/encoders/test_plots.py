"""Figures: surface maps (PNG + interactive HTML), ROI, image response, ROI bars, layer x ROI heatmap."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pytest
import xarray as xr

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
