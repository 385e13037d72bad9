"""`prepare-nsd`: the Algonauts folders it writes load (with the challenge reader) exactly as `load_nsd_subject`
returns, the planted truth is recovered near its noise ceiling, and it resumes and refuses cleanly."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from PIL import Image

from encoders.challenge import load_subject
from encoders.cli import main as encoders_main
from encoders.grid import fit_grid, predict_test
from encoders.scoring import challenge_score, pearson_r
from featurestore.store import LayerLayout, build_provenance, open_store
from nsd.layout import HEMISPHERES, ROI_NAMES
from nsd.prepare import prepare_nsd
from nsd.subject import load_nsd_subject
from nsd.tree import RawNsdError

RSC = ("nsdgeneral", "nsdgeneralRSC")


@pytest.fixture(scope="module")
def prepared(raw_nsd, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "algonauts"
    with pytest.warns(UserWarning) as caught:
        prepare_nsd(raw_nsd.root, [1, 2], out, roi=RSC, progress=False)
    messages = [str(w.message) for w in caught]
    assert any("subj02: only the all-vertices masks are written; ROI classes skipped" in m for m in messages)
    return out


def _load_raw(raw_nsd, subject, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_nsd_subject(raw_nsd.root, subject, **{"roi": RSC, "progress": False, **kwargs})


@pytest.mark.parametrize("subject", [1, 2])
def test_prepared_folder_loads_like_the_raw_subject(raw_nsd, prepared, subject):
    challenge = load_subject(prepared, subject)
    raw = _load_raw(raw_nsd, subject)
    np.testing.assert_array_equal(challenge.train_ids, raw.train_ids)
    np.testing.assert_array_equal(challenge.test_ids, raw.test_ids)
    for hemi in HEMISPHERES:
        np.testing.assert_array_equal(challenge.fmri[hemi], raw.fmri[hemi])
        np.testing.assert_array_equal(challenge.test_fmri[hemi], raw.test_fmri[hemi])
        np.testing.assert_array_equal(challenge.noise_ceiling[hemi], raw.noise_ceiling[hemi])
        np.testing.assert_array_equal(challenge.rois.all_vertices(hemi), raw.rois.all_vertices(hemi))
        assert list(challenge.rois.masks(hemi)) == list(raw.rois.masks(hemi))
        for name, mask in raw.rois.masks(hemi).items():
            np.testing.assert_array_equal(challenge.rois.masks(hemi)[name], mask)
    if subject == 2:
        assert not list((prepared / "subj02/roi_masks").glob("*floc*"))
    with h5py.File(raw_nsd.root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5") as file:
        for path, nsd_id in (
            (challenge.train_images[0], raw.train_ids[0]),
            (challenge.test_images[-1], raw.test_ids[-1]),
        ):
            np.testing.assert_array_equal(np.asarray(Image.open(path)), file["imgBrick"][nsd_id])


def test_roi_classes_of_a_subject_with_labels(prepared):
    atlas = load_subject(prepared, 1).rois
    for roi_class, names in ROI_NAMES.items():
        assert atlas.mapping(roi_class) == {0: "Unknown", **dict(enumerate(names, 1))}


def _write_feature_store(store: Path, features: np.ndarray) -> None:
    """The planted features of every NSD id, written through the store's own writer API."""
    ids = np.arange(len(features))
    opened = open_store(store, "a")
    entry = {"name": "planted", "source": "test", "architecture": "linear", "layers": ["x"]}
    provenance = build_provenance(entry, {"weights": "none", "sha256": "0" * 64}, {}, "float32", 64)
    with opened.lock("planted"):
        plan = opened.plan("planted", ids, ["x"], 64)
        opened.apply_plan(plan, provenance, [LayerLayout("x", (features.shape[1],), features.shape[1])])
        for task in plan.tasks:
            rows = plan.nsd_ids[task.compute_from : task.stop]
            opened.write_chunk("planted", "x", task, features[rows].astype(np.float32))


def test_fit_grid_recovers_the_planted_truth_near_its_ceiling(raw_nsd, prepared, tmp_path):
    """Ridge on the planted features reaches most of the noise ceiling on the held-out test images; the same
    features shuffled across images (a model with no truth in it) do not."""
    store = tmp_path / "planted.zarr"
    _write_feature_store(store, raw_nsd.features)
    setting = dict(pca=None, alphas=[1e-2, 1, 1e2], cv=5)
    results = fit_grid(
        store, prepared, subjects=[1, 2], settings=[setting], out=tmp_path / "fit", n_boot=20, progress=False
    )
    assert float(results["r"].median()) > 0.3
    scores = {}
    for name, features in (
        ("planted", raw_nsd.features),
        ("shuffled", np.random.default_rng(0).permutation(raw_nsd.features)),
    ):
        _write_feature_store(tmp_path / f"{name}.zarr", features)
        predictions = predict_test(tmp_path / f"{name}.zarr", prepared, "planted:x", setting=setting, subjects=[1, 2])
        for subject, by_hemi in predictions.items():
            data = load_subject(prepared, subject)
            for hemi, predicted in by_hemi.items():
                r = pearson_r(data.test_fmri[hemi], predicted)
                scores[(name, subject, hemi)] = challenge_score(r, data.noise_ceiling[hemi])[1]
    planted = [score for key, score in scores.items() if key[0] == "planted"]
    shuffled = [score for key, score in scores.items() if key[0] == "shuffled"]
    assert min(planted) > 60, scores
    assert max(shuffled) < 30, scores


def test_fit_on_a_raw_nsd_tree_prepares_it_first(raw_nsd, tmp_path, capsys):
    store = tmp_path / "planted.zarr"
    _write_feature_store(store, raw_nsd.features)
    out = tmp_path / "fit"
    command = ["fit", "--store", str(store), "--data", str(raw_nsd.root), "--subjects", "1", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert encoders_main([*command, "--pca", "none", "--cv", "loo", "--n-boot", "20", "--quiet"]) == 0
    assert f"prepared with the organisers' recipe (nsdgeneral, challenge split) in {out / 'nsd_data'}" in (
        capsys.readouterr().out
    )
    results = xr.open_dataset(out / "results.nc")
    assert results.attrs["data_dir"] == str(out / "nsd_data") and float(results["r"].median()) > 0.3
    np.testing.assert_array_equal(
        load_subject(out / "nsd_data", 1).train_ids, _load_raw(raw_nsd, 1, roi="nsdgeneral").train_ids
    )


def test_rerun_skips_prepared_subjects_and_redoes_an_interrupted_one(raw_nsd, tmp_path):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        prepare_nsd(raw_nsd.root, [1], out, progress=False)
        stamp = (out / "subj01/training_split/training_fmri/lh_training_fmri.npy").stat().st_mtime_ns
        (out / ".subj02.partial/roi_masks").mkdir(parents=True)  # what a killed run leaves
        (out / ".subj02.partial/roi_masks/junk.npy").write_bytes(b"half")
        plan = prepare_nsd(raw_nsd.root, [1, 2], out, progress=False)
    assert plan.done == [1] and list(plan.todo) == [2]
    assert (out / "subj01/training_split/training_fmri/lh_training_fmri.npy").stat().st_mtime_ns == stamp
    assert not (out / ".subj02.partial").exists() and not (out / "subj02/roi_masks/junk.npy").exists()
    load_subject(out, 2)


def test_a_folder_from_another_recipe_is_never_reused(raw_nsd, prepared):
    with warnings.catch_warnings(), pytest.raises(RawNsdError, match=r"subj01 was prepared with another recipe \(roi="):
        warnings.simplefilter("ignore", UserWarning)
        prepare_nsd(raw_nsd.root, [1], prepared, roi="nsdgeneral", progress=False)
    assert prepare_nsd(raw_nsd.root, [1, 2], prepared, roi=RSC, dry_run=True).done == [1, 2]


def test_a_subject_folder_not_from_prepare_nsd_is_never_reused(raw_nsd, tmp_path):
    (tmp_path / "out" / "subj01").mkdir(parents=True)
    with pytest.raises(RawNsdError, match=r"subj01 exists but has no nsd_recipe\.json"):
        prepare_nsd(raw_nsd.root, [1], tmp_path / "out", dry_run=True)


def test_failure_leaves_nothing_half_written(raw_nsd, tmp_path):
    root = raw_nsd.linked_copy(raw_nsd.root, tmp_path / "nsd")
    broken = root / raw_nsd.betas.format(s=2) / "rh.betas_session04.mgh"
    broken.unlink()
    broken.write_bytes(b"not an mgh file")
    out = tmp_path / "out"
    with (
        warnings.catch_warnings(),
        pytest.raises(RawNsdError, match=f"Cannot read session file {re.escape(str(broken))}"),
    ):
        warnings.simplefilter("ignore", UserWarning)
        prepare_nsd(root, [1, 2], out, progress=False)
    assert sorted(path.name for path in out.iterdir()) == ["subj01"]


def test_require_rois(raw_nsd, tmp_path):
    with warnings.catch_warnings(), pytest.raises(RawNsdError, match=r"subj02: ROI classes missing \(prf-visualrois"):
        warnings.simplefilter("ignore", UserWarning)
        prepare_nsd(raw_nsd.root, [2], tmp_path / "out", require_rois=True, progress=False)
    assert not list((tmp_path / "out").iterdir())


def test_cli_help_reads_like_the_readme(capsys):
    with pytest.raises(SystemExit) as exit_info:
        encoders_main(["prepare-nsd", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the last 3 sessions present are held out" in text and "--require-rois" in text
    with pytest.raises(SystemExit):
        encoders_main(["--help"])
    assert "encoders prepare-nsd --nsd-dir NSD --subjects 1..8" in capsys.readouterr().out


def test_cli_dry_run_and_errors(raw_nsd, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        encoders_main(
            ["prepare-nsd", "--nsd-dir", str(raw_nsd.root), "--subjects", "1..2", "--out", str(out), "--dry-run"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "subj01: read 6 sessions x 2 hemispheres" in printed and "subj02: read 5 sessions" in printed
    assert re.search(r"reads \d+\.\d\d GB, writes at most \d+\.\d\d GB", printed)
    assert not out.exists()
    assert encoders_main(["prepare-nsd", "--nsd-dir", str(raw_nsd.root), "--subjects", "9", "--out", str(out)]) == 1
    assert "encoders prepare-nsd: error: Unknown NSD subject='9'; NSD has subjects 1..8" in capsys.readouterr().err
    assert encoders_main(["prepare-nsd", "--nsd-dir", str(tmp_path), "--subjects", "1", "--out", str(out)]) == 1
    assert "Missing file" in capsys.readouterr().err
