"""Loading Algonauts 2023 subjects and ROI masks: agreement with raw np.load, and every refused input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from encoders.challenge import (
    ALL_VERTICES,
    ChallengeDataError,
    RoiAtlas,
    list_images,
    list_subjects,
    load_subject,
)


def _fmri_path(data: Path, subject: int, hemi: str) -> Path:
    return data / f"subj{subject:02d}" / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy"


def _ids_from_names(folder: Path) -> list[int]:
    """NSD ids read straight from the file names, independently of the loader's parser."""
    names = sorted(p.name for p in folder.iterdir())
    return [int(re.search(r"nsd-(\d{5})", name).group(1)) for name in names]


def test_list_subjects(algonauts_dir):
    assert list_subjects(algonauts_dir) == [1, 2]


@pytest.mark.parametrize(("subject", "number"), [(1, 1), ("subj02", 2)])
def test_load_subject_matches_raw_files(algonauts_dir, algonauts_spec, subject, number):
    data = load_subject(algonauts_dir, subject)
    folder = algonauts_dir / f"subj{number:02d}"
    for hemi in ("lh", "rh"):
        raw = np.load(_fmri_path(algonauts_dir, number, hemi))
        assert data.fmri[hemi].dtype == np.float32
        assert isinstance(data.fmri[hemi], np.memmap)
        np.testing.assert_array_equal(data.fmri[hemi], raw)
        assert data.rois.n_vertices(hemi) == raw.shape[1]
    train_folder = folder / "training_split" / "training_images"
    assert data.train_ids.dtype == np.int64
    assert data.train_ids.tolist() == _ids_from_names(train_folder)
    assert data.test_ids.tolist() == _ids_from_names(folder / "test_split" / "test_images")
    assert [p.name for p in data.train_images] == sorted(p.name for p in train_folder.iterdir())
    assert (data.n_train, data.n_test) == (algonauts_spec.n_train, algonauts_spec.n_test)


def test_test_split_only_when_present(algonauts_dir, algonauts_spec):
    data = load_subject(algonauts_dir, 1)
    test_split = algonauts_dir / "subj01" / "test_split"
    for hemi in ("lh", "rh"):
        ceiling = np.load(test_split / f"noise_ceiling/{hemi}_noise_ceiling.npy")
        np.testing.assert_array_equal(data.noise_ceiling[hemi], ceiling)
        np.testing.assert_array_equal(data.test_fmri[hemi], np.load(test_split / f"test_fmri/{hemi}_test_fmri.npy"))
        assert data.test_fmri[hemi].shape == (algonauts_spec.n_test, data.rois.n_vertices(hemi))
    other = load_subject(algonauts_dir, 2)
    assert other.noise_ceiling is None and other.test_fmri is None


def test_old_noise_ceiling_folder_is_not_read(algonauts_copy):
    folder = algonauts_copy / "subj02" / "noise_ceiling"
    folder.mkdir()
    for hemi, n in zip(("lh", "rh"), (52, 48)):
        np.save(folder / f"{hemi}_noise_ceiling.npy", np.full(n, 50, np.float32))
    assert load_subject(algonauts_copy, 2).noise_ceiling is None


@pytest.mark.parametrize("scale", [100.0, 1.0001])
def test_percent_unit_noise_ceiling_is_refused(algonauts_copy, scale):
    path = algonauts_copy / "subj01" / "test_split" / "noise_ceiling" / "rh_noise_ceiling.npy"
    ceiling = np.load(path)
    ceiling[3] = 1.0
    np.save(path, ceiling * np.float32(scale))
    largest = f"{float(np.float32(scale)):g}"
    message = (
        rf"{re.escape(str(path))}: noise ceiling values run from .* to {re.escape(largest)}, "
        r"expected a fraction in \[0, 1\]"
    )
    with pytest.raises(ChallengeDataError, match=message):
        load_subject(algonauts_copy, 1)
    np.testing.assert_array_equal(np.load(path), ceiling * np.float32(scale))  # refused, never rewritten


def test_noise_ceiling_of_one_hemisphere_is_refused(algonauts_copy):
    path = algonauts_copy / "subj01" / "test_split" / "noise_ceiling" / "lh_noise_ceiling.npy"
    path.unlink()
    with pytest.raises(ChallengeDataError, match=rf"Missing file {re.escape(str(path))} \(its other hemisphere"):
        load_subject(algonauts_copy, 1)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((4, 59), r"fMRI has shape \(4, 59\), expected \(4, 60\)"),
        ((3, 60), r"has 3 rows but the test image folder holds 4"),
    ],
)
def test_test_fmri_of_wrong_shape(algonauts_copy, shape, match):
    path = algonauts_copy / "subj01" / "test_split" / "test_fmri" / "lh_test_fmri.npy"
    np.save(path, np.zeros(shape, np.float32))
    with pytest.raises(ChallengeDataError, match=rf"{re.escape(str(path))}: .*{match}"):
        load_subject(algonauts_copy, 1)


def test_test_fmri_with_nan_is_named(algonauts_copy):
    path = algonauts_copy / "subj01" / "test_split" / "test_fmri" / "rh_test_fmri.npy"
    fmri = np.load(path)
    fmri[2, 5] = np.nan
    np.save(path, fmri)
    with pytest.raises(ChallengeDataError, match=rf"{re.escape(str(path))}: fMRI has 1 NaN .*row 2, vertex 5"):
        load_subject(algonauts_copy, 1)


def test_float64_fmri_is_converted(algonauts_copy):
    path = _fmri_path(algonauts_copy, 1, "lh")
    raw = np.load(path)
    np.save(path, raw.astype(np.float64))
    loaded = load_subject(algonauts_copy, 1).fmri["lh"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, raw)


def test_roi_masks_match_raw_files(algonauts_dir, algonauts_spec):
    roi_names = algonauts_spec.roi_names
    atlas = RoiAtlas(algonauts_dir, 1)
    folder = algonauts_dir / "subj01" / "roi_masks"
    all_vertices = np.load(folder / "lh.all-vertices_fsaverage_space.npy")
    labels = np.load(folder / "lh.floc-faces_challenge_space.npy")
    fsaverage_labels = np.load(folder / "lh.floc-faces_fsaverage_space.npy")
    ffa1 = 2  # mapping_floc-faces: {1: OFA, 2: FFA-1, ...}
    assert atlas.roi_classes() == list(roi_names)
    assert atlas.n_vertices("lh") == int(all_vertices.sum()) == algonauts_spec.n_vertices[1][0]
    np.testing.assert_array_equal(atlas.mask("lh", "FFA-1"), labels == ffa1)
    np.testing.assert_array_equal(atlas.mask("lh", "FFA-1", space="fsaverage"), fsaverage_labels == ffa1)
    np.testing.assert_array_equal(atlas.mask("lh", "floc-faces"), labels != 0)
    np.testing.assert_array_equal(atlas.mask("lh", ALL_VERTICES, space="fsaverage"), all_vertices == 1)
    assert atlas.mask("lh", ALL_VERTICES).all()
    assert atlas.roi_names("lh", "prf-visualrois") == roi_names["prf-visualrois"]
    assert atlas.roi_names("lh") == [name for names in roi_names.values() for name in names]
    assert list(atlas.masks("lh")) == [ALL_VERTICES, *atlas.roi_names("lh")]


def test_absent_roi_is_listed_nowhere_and_empty(algonauts_dir, algonauts_spec):
    subject, hemi, roi_class, name = algonauts_spec.absent_roi
    atlas = RoiAtlas(algonauts_dir, subject)
    assert name not in atlas.roi_names(hemi, roi_class)
    assert name in atlas.roi_names("lh", roi_class)
    assert not atlas.mask(hemi, name).any()
    assert atlas.mask(hemi, name).shape == (atlas.n_vertices(hemi),)


def test_to_fsaverage_places_values_on_challenge_vertices(algonauts_dir):
    atlas = RoiAtlas(algonauts_dir, 1)
    values = np.arange(atlas.n_vertices("rh"), dtype=np.float32)
    surface_values = atlas.to_fsaverage("rh", values)
    selected = np.flatnonzero(np.load(algonauts_dir / "subj01" / "roi_masks" / "rh.all-vertices_fsaverage_space.npy"))
    np.testing.assert_array_equal(surface_values[selected], values)
    assert np.isnan(np.delete(surface_values, selected)).all()


def test_fmri_rows_differ_from_image_count(algonauts_copy, algonauts_spec):
    n_train = algonauts_spec.n_train
    path = _fmri_path(algonauts_copy, 1, "rh")
    np.save(path, np.load(path)[:-1])
    message = rf"rh_training_fmri.npy: fMRI has {n_train - 1} rows but .* {n_train} images"
    with pytest.raises(ChallengeDataError, match=message):
        load_subject(algonauts_copy, 1)


def test_missing_training_image_is_named(algonauts_copy):
    folder = algonauts_copy / "subj01" / "training_split" / "training_images"
    sorted(folder.iterdir())[4].unlink()
    with pytest.raises(ChallengeDataError, match=r"missing rows \[5\]"):
        load_subject(algonauts_copy, 1)


@pytest.mark.parametrize(("bad", "counts"), [(np.nan, "1 NaN and 0 inf"), (np.inf, "0 NaN and 1 inf")])
def test_non_finite_fmri(algonauts_copy, bad, counts):
    path = _fmri_path(algonauts_copy, 2, "lh")
    fmri = np.load(path)
    fmri[3, 7] = bad
    np.save(path, fmri)
    message = rf"lh_training_fmri.npy: fMRI has {counts} values \(first at row 3, vertex 7\)"
    with pytest.raises(ChallengeDataError, match=message):
        load_subject(algonauts_copy, 2)


def test_roi_mask_length_differs_from_fmri(algonauts_copy, algonauts_spec):
    path = algonauts_copy / "subj01" / "roi_masks" / "lh.prf-visualrois_challenge_space.npy"
    np.save(path, np.load(path)[:-2])
    atlas = load_subject(algonauts_copy, 1).rois
    n = algonauts_spec.n_vertices[1][0]
    message = rf"lh.prf-visualrois_challenge_space.npy: ROI mask has shape \({n - 2},\), expected \({n},\)"
    with pytest.raises(ChallengeDataError, match=message):
        atlas.mask("lh", "V1v")


def test_all_vertices_mask_disagrees_with_fmri_columns(algonauts_copy, algonauts_spec):
    path = _fmri_path(algonauts_copy, 1, "lh")
    np.save(path, np.load(path)[:, :-1])
    n = algonauts_spec.n_vertices[1][0]
    with pytest.raises(ChallengeDataError, match=rf"selects {n} challenge vertices but the lh fMRI has {n - 1}"):
        load_subject(algonauts_copy, 1)


@pytest.mark.parametrize(
    ("filename", "space"),
    [("rh.all-vertices_fsaverage_space.npy", "challenge"), ("rh.streams_fsaverage_space.npy", "fsaverage")],
)
def test_fsaverage_mask_wrong_length(algonauts_copy, filename, space):
    path = algonauts_copy / "subj01" / "roi_masks" / filename
    np.save(path, np.load(path)[:10242])
    atlas = RoiAtlas(algonauts_copy, 1)
    with pytest.raises(ChallengeDataError, match=rf"{filename}: .*shape \(10242,\), expected \(163842,\)"):
        atlas.mask("rh", "early", space=space)


@pytest.mark.parametrize(
    "relative",
    [
        "training_split/training_fmri/rh_training_fmri.npy",
        "roi_masks/lh.all-vertices_fsaverage_space.npy",
    ],
)
def test_missing_file_is_named(algonauts_copy, relative):
    path = algonauts_copy / "subj01" / relative
    path.unlink()
    with pytest.raises(ChallengeDataError, match=f"Missing file {re.escape(str(path))}"):
        load_subject(algonauts_copy, 1)


def test_missing_mapping_is_named(algonauts_copy):
    (algonauts_copy / "subj02" / "roi_masks" / "mapping_floc-places.npy").unlink()
    with pytest.raises(ChallengeDataError, match=r"Missing file .*mapping_floc-places.npy"):
        RoiAtlas(algonauts_copy, 2).mask("lh", "PPA")


def test_unknown_roi_lists_valid_names(algonauts_dir):
    atlas = RoiAtlas(algonauts_dir, 1)
    message = r"Unknown ROI 'V9' for subj01; valid names: \['All vertices', .*'V1v'.*'parietal'\]"
    with pytest.raises(ChallengeDataError, match=message):
        atlas.mask("lh", "V9")


def test_unknown_subject_lists_subjects(algonauts_dir):
    with pytest.raises(ChallengeDataError, match=r"subjects in .*: \[1, 2\]"):
        load_subject(algonauts_dir, 3)


def test_image_in_wrong_split_folder(algonauts_copy):
    folder = algonauts_copy / "subj01" / "test_split" / "test_images"
    first = sorted(folder.iterdir())[0]
    first.rename(folder / first.name.replace("test-", "train-"))
    with pytest.raises(ChallengeDataError, match=r"a 'train' image in the test image folder"):
        list_images(algonauts_copy, 1, "test")


def test_badly_named_image_is_refused(algonauts_copy):
    folder = algonauts_copy / "subj02" / "training_split" / "training_images"
    sorted(folder.iterdir())[0].rename(folder / "train-0001.png")
    with pytest.raises(ChallengeDataError, match=r"training_images: .*train-0001.png"):
        load_subject(algonauts_copy, 2)


def test_loads_featurestore_demo_data(tmp_path):
    """Contract with featurestore.demo_data: its layout loads and agrees with the raw files."""
    from featurestore.demo_data import make_demo_data

    data_dir = make_demo_data(tmp_path / "demo", n_subjects=2, n_train=6, n_test=3, n_vertices=40, seed=0)
    for subject in list_subjects(data_dir):
        data = load_subject(data_dir, subject)
        for hemi in ("lh", "rh"):
            np.testing.assert_array_equal(data.fmri[hemi], np.load(_fmri_path(data_dir, subject, hemi)))
            assert data.noise_ceiling[hemi].shape == (data.rois.n_vertices(hemi),)
            assert all(mask.shape == (data.rois.n_vertices(hemi),) for mask in data.rois.masks(hemi).values())
        folder = data_dir / f"subj{subject:02d}"
        assert data.train_ids.tolist() == _ids_from_names(folder / "training_split" / "training_images")
        assert data.n_test == 3
