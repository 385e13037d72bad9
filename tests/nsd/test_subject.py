"""`load_nsd_subject` against the organisers' recipe written out here as they wrote it (loops, StandardScaler,
np.append), the planted ncsnr through the noise-ceiling formula, and bad raw trees."""

from __future__ import annotations

import re
import warnings

import nibabel as nib
import numpy as np
import pytest
import scipy.io
from sklearn.preprocessing import StandardScaler

from nsd.layout import HEMISPHERES, ROI_NAMES
from nsd.subject import load_nsd_subject
from nsd.tree import RawNsdError

TRIALS_PER_SESSION = 20  # the miniature's design (tests/nsd/conftest.py), checked below against the fixture


def _load(spec, subject, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # subj02 has fewer sessions than the design
        return load_nsd_subject(spec.root, subject, progress=False, **kwargs)


def _zscored_trials(spec, subject, labels=("nsdgeneral",), space="fsaverage"):
    """(trial ids, {hemi: z-scored trials x mask vertices with NaN}, {hemi: flat mask}) the organisers' way (in the
    volume: the int16 betas / 300, each hemisphere's voxels)."""
    completed = spec.sessions[subject]
    all_trials = spec.subjectim[subject - 1, spec.masterordering][: completed * TRIALS_PER_SESSION]
    betas, masks = {}, {}
    for hemi in HEMISPHERES:
        sessions = []
        if space == "fsaverage":
            folder = spec.root / "nsddata/freesurfer/fsaverage/label"
            mask = sum(np.squeeze(nib.load(folder / f"{hemi}.{label}.mgz").get_fdata()) for label in labels)
        else:
            folder = spec.root / spec.volume_roi.format(s=subject)
            mask = sum(nib.load(folder / f"{hemi}.{label}.nii.gz").get_fdata() > 0 for label in labels).ravel()
        for s in range(completed):
            if space == "fsaverage":
                path = spec.root / spec.betas.format(s=subject) / f"{hemi}.betas_session{s + 1:02d}.mgh"
                session = np.transpose(np.squeeze(nib.load(path).get_fdata()))
            else:
                path = spec.root / spec.volume_betas.format(s=subject) / f"betas_session{s + 1:02d}.nii.gz"
                volume = nib.load(path).get_fdata() / 300
                session = volume.reshape(-1, volume.shape[-1]).T
            sessions.append(StandardScaler().fit_transform(session[:, np.where(mask)[0]]))
        betas[hemi], masks[hemi] = np.concatenate(sessions), mask.astype(int)
    return all_trials, betas, masks


def _organisers(spec, subject, labels=("nsdgeneral",), space="fsaverage"):
    """The challenge data of ``challenge_data_preparation.py`` for the miniature (test_sessions = 3)."""
    all_trials, betas, masks = _zscored_trials(spec, subject, labels, space)
    completed = spec.sessions[subject]
    train_trials = all_trials[: (completed - 3) * TRIALS_PER_SESSION]
    train_unique_cond = np.unique(train_trials)
    test_trials_all = all_trials[-3 * TRIALS_PER_SESSION :]
    test_trials = test_trials_all[np.isin(test_trials_all, train_unique_cond, invert=True)]
    shared_img = spec.subjectim[0, : spec.n_shared]
    if completed == spec.design_sessions:
        valid = [i for i in shared_img if len(np.where(test_trials == i)[0]) == 3]
        shared_img = np.delete(shared_img, np.where(np.isin(shared_img, valid))[0])
    test_trials = test_trials[np.isin(test_trials, shared_img, invert=True)]
    test_unique_cond = np.unique(test_trials)
    out = {"train_ids": train_unique_cond, "test_ids": test_unique_cond}
    for hemi in HEMISPHERES:
        nan = np.isnan(betas[hemi]).sum(0).astype(bool)
        kept = np.delete(betas[hemi], np.where(nan)[0], 1)
        mask = masks[hemi].copy()
        index = np.zeros(len(mask), dtype=bool)
        index[np.where(mask)[0]] = nan
        mask[np.where(index)[0]] = 0
        train = np.zeros((len(train_unique_cond), kept.shape[1]))
        for i, cond in enumerate(train_unique_cond):
            train[i] = np.mean(kept[np.where(train_trials == cond)[0]], 0)
        test = np.zeros((len(test_unique_cond), kept.shape[1]))
        for i, cond in enumerate(test_unique_cond):
            test[i] = np.mean(kept[np.where(all_trials == cond)[0]], 0)
        if space == "fsaverage":
            ncsnr = np.squeeze(nib.load(spec.root / spec.betas.format(s=subject) / f"{hemi}.ncsnr.mgh").get_fdata())
        else:
            ncsnr = nib.load(spec.root / spec.volume_betas.format(s=subject) / "ncsnr.nii.gz").get_fdata().ravel()
        ncsnr = ncsnr[np.where(mask)[0]]
        reps = [len(np.where(test_trials_all == i)[0]) for i in test_unique_cond]
        norm_term = (reps.count(3) / 3 + reps.count(2) / 2 + reps.count(1)) / len(reps)
        out[hemi] = dict(
            train=np.float32(train), test=np.float32(test), mask=mask, nc=ncsnr**2 / (ncsnr**2 + norm_term)
        )
    return out


@pytest.mark.parametrize(
    ("subject", "labels"), [(1, ("nsdgeneral",)), (1, ("nsdgeneral", "nsdgeneralRSC")), (2, ("nsdgeneral",))]
)
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # StandardScaler on subj02's NaN vertices
def test_challenge_subject_equals_the_organisers_recipe(raw_nsd, subject, labels):
    data = _load(raw_nsd, subject, roi=labels if len(labels) > 1 else labels[0])
    expected = _organisers(raw_nsd, subject, labels)
    np.testing.assert_array_equal(data.train_ids, expected["train_ids"])
    np.testing.assert_array_equal(data.test_ids, expected["test_ids"])
    for hemi in HEMISPHERES:
        assert data.fmri[hemi].dtype == np.float32 and data.test_fmri[hemi].dtype == np.float32
        np.testing.assert_allclose(data.fmri[hemi], expected[hemi]["train"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(data.test_fmri[hemi], expected[hemi]["test"], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(data.rois.all_vertices(hemi), expected[hemi]["mask"].astype(bool))
        np.testing.assert_allclose(data.noise_ceiling[hemi], expected[hemi]["nc"], rtol=1e-6)


def test_volume_subject_equals_the_recipe_on_voxels(raw_nsd):
    data = load_nsd_subject(raw_nsd.root, 1, space="func1pt8mm", progress=False)
    expected = _organisers(raw_nsd, 1, space="func1pt8mm")
    np.testing.assert_array_equal(data.train_ids, expected["train_ids"])
    np.testing.assert_array_equal(data.test_ids, expected["test_ids"])
    for hemi in HEMISPHERES:
        assert 0 < data.fmri[hemi].shape[1] == expected[hemi]["mask"].sum()
        np.testing.assert_allclose(data.fmri[hemi], expected[hemi]["train"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(data.test_fmri[hemi], expected[hemi]["test"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(data.noise_ceiling[hemi], expected[hemi]["nc"], rtol=1e-6)
        np.testing.assert_array_equal(data.rois.all_vertices(hemi), expected[hemi]["mask"].astype(bool))
        for roi_class in ROI_NAMES:
            path = raw_nsd.root / raw_nsd.volume_roi.format(s=1) / f"{hemi}.{roi_class}.nii.gz"
            labels = np.asarray(nib.load(path).dataobj).ravel()[expected[hemi]["mask"].astype(bool)]
            np.testing.assert_array_equal(data.rois.labels(hemi, roi_class), labels)
    with pytest.raises(RawNsdError, match=r"Missing betas folder .*subj02/func1pt8mm"):
        load_nsd_subject(raw_nsd.root, 2, space="func1pt8mm", progress=False)


def test_nan_vertices_are_dropped(raw_nsd):
    for hemi in HEMISPHERES:
        selected = np.flatnonzero(raw_nsd.masks[hemi])
        kept = load_nsd_subject(raw_nsd.root, 1, progress=False).rois.all_vertices(hemi)
        np.testing.assert_array_equal(np.flatnonzero(kept), selected)
        kept = _load(raw_nsd, 2).rois.all_vertices(hemi)
        np.testing.assert_array_equal(np.flatnonzero(kept), np.delete(selected, raw_nsd.nan_vertices[hemi]))


def test_challenge_exception_for_shared_images(raw_nsd):
    """Shared column 0 (3 trials, all held out) is a test image only for the complete subject; column 1 (2 trials)
    never is."""
    shared_0, shared_1 = raw_nsd.subjectim[0, 0], raw_nsd.subjectim[0, 1]
    complete = load_nsd_subject(raw_nsd.root, 1, progress=False)
    assert shared_0 in complete.test_ids and shared_1 not in complete.test_ids
    incomplete = _load(raw_nsd, 2)
    assert not np.isin(raw_nsd.shared, incomplete.test_ids).any()


def test_noise_ceiling_is_the_formula_of_the_planted_ncsnr(raw_nsd):
    data = load_nsd_subject(raw_nsd.root, 1, progress=False)
    trials = raw_nsd.subjectim[0, raw_nsd.masterordering]
    repeats = np.array([(trials == nsd_id).sum() for nsd_id in data.test_ids])
    assert set(repeats) <= {1, 2, 3} and len(set(repeats)) > 1
    n1, n2, n3 = ((repeats == k).sum() for k in (1, 2, 3))
    norm_term = (n3 / 3 + n2 / 2 + n1 / 1) / (n3 + n2 + n1)
    for hemi in HEMISPHERES:
        ncsnr = raw_nsd.ncsnr[hemi][data.rois.all_vertices(hemi)].astype(np.float64)
        np.testing.assert_allclose(data.noise_ceiling[hemi], ncsnr**2 / (ncsnr**2 + norm_term), rtol=1e-6)


def test_shared1000_and_explicit_ids_and_single_trials(raw_nsd):
    all_trials, betas, _ = _zscored_trials(raw_nsd, 1)
    shared = load_nsd_subject(raw_nsd.root, 1, test="shared1000", progress=False)
    np.testing.assert_array_equal(shared.test_ids, np.intersect1d(all_trials, raw_nsd.shared))
    np.testing.assert_array_equal(shared.train_ids, np.setdiff1d(all_trials, raw_nsd.shared))
    for i, nsd_id in enumerate(shared.train_ids[:5]):
        np.testing.assert_allclose(shared.fmri["lh"][i], betas["lh"][all_trials == nsd_id].mean(0), rtol=1e-5)
    chosen = shared.train_ids[[0, 3, 7]]
    own = load_nsd_subject(raw_nsd.root, 1, test=chosen, progress=False)
    np.testing.assert_array_equal(own.test_ids, np.sort(chosen))
    np.testing.assert_allclose(own.test_fmri["rh"][1], betas["rh"][all_trials == np.sort(chosen)[1]].mean(0), rtol=1e-5)

    single = load_nsd_subject(raw_nsd.root, 1, test="shared1000", average=False, progress=False)
    is_test = np.isin(all_trials, raw_nsd.shared)
    np.testing.assert_array_equal(single.train_ids, all_trials[~is_test])
    np.testing.assert_array_equal(single.test_ids, all_trials[is_test])
    np.testing.assert_allclose(single.fmri["lh"], betas["lh"][~is_test], rtol=1e-5, atol=1e-6)
    ncsnr = raw_nsd.ncsnr["lh"][raw_nsd.masks["lh"]].astype(np.float64)
    np.testing.assert_allclose(single.noise_ceiling["lh"], ncsnr**2 / (ncsnr**2 + 1), rtol=1e-6)


def test_first_sessions_only(raw_nsd):
    data = load_nsd_subject(raw_nsd.root, 1, sessions=4, test="shared1000", progress=False)
    seen = raw_nsd.subjectim[0, raw_nsd.masterordering[: 4 * TRIALS_PER_SESSION]]
    np.testing.assert_array_equal(np.union1d(data.train_ids, data.test_ids), np.unique(seen))


def test_roi_labels_are_mapped_to_fsaverage_and_the_challenge_vertices(raw_nsd):
    data = load_nsd_subject(raw_nsd.root, 1, progress=False)
    for hemi in HEMISPHERES:
        kept = data.rois.all_vertices(hemi)
        for roi_class in ROI_NAMES:
            expected = np.where(kept, raw_nsd.native_labels[(hemi, roi_class)], 0)
            np.testing.assert_array_equal(data.rois.labels(hemi, roi_class, "fsaverage"), expected)
            np.testing.assert_array_equal(data.rois.labels(hemi, roi_class), expected[kept])
            assert data.rois.mapping(roi_class) == {0: "Unknown", **dict(enumerate(ROI_NAMES[roi_class], 1))}
    assert data.rois.masks("lh")["All vertices"].sum() == data.fmri["lh"].shape[1]
    without = _load(raw_nsd, 2)
    assert without.rois.roi_classes() == [] and set(without.rois.skipped) == set(ROI_NAMES)
    assert list(without.rois.masks("lh")) == ["All vertices"]


def test_fewer_sessions_than_the_design_warns(raw_nsd):
    with pytest.warns(UserWarning, match=r"subj02 has 5 of the design's 6 sessions"):
        load_nsd_subject(raw_nsd.root, 2, progress=False)


@pytest.mark.parametrize("subject", [0, 9, "subj09", "alice"])
def test_subject_outside_nsd(raw_nsd, subject):
    with pytest.raises(RawNsdError, match=re.escape(f"Unknown NSD subject={subject!r}; NSD has subjects 1..8")):
        load_nsd_subject(raw_nsd.root, subject, progress=False)


def test_missing_session_in_the_middle(raw_nsd, tmp_path):
    root = raw_nsd.linked_copy(raw_nsd.root, tmp_path / "nsd")
    missing = root / raw_nsd.betas.format(s=1) / "lh.betas_session03.mgh"
    missing.unlink()
    with pytest.raises(RawNsdError, match=f"Missing session file {re.escape(str(missing))}: sessions must run 1..6"):
        load_nsd_subject(root, 1, progress=False)
    rh_only = root / raw_nsd.betas.format(s=1) / "rh.betas_session03.mgh"
    missing.symlink_to(rh_only.resolve().with_name("lh.betas_session03.mgh"))
    rh_only.unlink()
    with pytest.raises(RawNsdError, match=f"Missing session file {re.escape(str(rh_only))}$"):
        load_nsd_subject(root, 1, progress=False)


def test_session_with_the_wrong_number_of_trials(raw_nsd, tmp_path):
    root = raw_nsd.linked_copy(raw_nsd.root, tmp_path / "nsd")
    path = root / raw_nsd.betas.format(s=1) / "rh.betas_session04.mgh"
    path.unlink()
    raw_nsd.write_mgh(path, np.zeros((163842, TRIALS_PER_SESSION - 1), dtype=np.float32))
    with pytest.raises(RawNsdError, match=re.escape(f"{path}: has 19 trials, expected 20")):
        load_nsd_subject(root, 1, progress=False)


def test_expdesign_that_does_not_match_the_betas(raw_nsd, tmp_path):
    root = raw_nsd.linked_copy(raw_nsd.root, tmp_path / "nsd")
    design = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    mat = {key: value for key, value in scipy.io.loadmat(design.resolve()).items() if not key.startswith("__")}
    design.unlink()
    scipy.io.savemat(design, {**mat, "masterordering": mat["masterordering"][:, :110]})
    with pytest.raises(RawNsdError, match=re.escape(f"{design} does not match the betas: masterordering has 110")):
        load_nsd_subject(root, 1, progress=False)
    design.unlink()
    scipy.io.savemat(design, {**mat, "masterordering": mat["masterordering"][:, :100]})
    with pytest.raises(RawNsdError, match=r"not room for 6 sessions of the 20 trials"):
        load_nsd_subject(root, 1, progress=False)
    design.unlink()
    scipy.io.savemat(design, {key: value for key, value in mat.items() if key != "subjectim"})
    with pytest.raises(RawNsdError, match=re.escape(f"{design} has no variable 'subjectim'")):
        load_nsd_subject(root, 1, progress=False)


def test_betas_on_another_surface(raw_nsd, tmp_path):
    root = raw_nsd.linked_copy(raw_nsd.root, tmp_path / "nsd")
    path = root / raw_nsd.betas.format(s=1) / "lh.betas_session02.mgh"
    path.unlink()
    raw_nsd.write_mgh(path, np.zeros((10242, TRIALS_PER_SESSION), dtype=np.float32))
    with pytest.raises(RawNsdError, match=re.escape(f"{path}: betas have shape (10242, 20), expected (163842, 20)")):
        load_nsd_subject(root, 1, progress=False)
