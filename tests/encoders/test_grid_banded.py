"""The banded join of the grid and its variance partition, on a planted simulation: the left hemisphere is driven
by feature space "a" only, the right by space "b" only. References: `encoders.ridge.BandedRidgeCV` and
`encoders.partition.partition_variance` run directly on scikit-learn PCA blocks of the same rows, and the planted
truth."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.decomposition import PCA as SklearnPCA
from sklearn.metrics import r2_score

from encoders.challenge import list_images, load_subject
from encoders.cli import main
from encoders.ensemble import fit_ensemble
from encoders.figures import _winning_space, write_figures
from encoders.grid import EncoderSetting, fit_grid, load_results, predict_test, predict_validation
from encoders.leaderboard import partition_table
from encoders.partition import partition_by_roi, partition_variance
from encoders.plots import plot_partition_bars
from encoders.ridge import BandedRidgeCV
from featurestore.demo_data import make_demo_data
from featurestore.store import LayerLayout, build_provenance, open_store

BACKBONE = "planted"
WIDTH = 8  # features per space; column j scaled by 0.8**j so the principal axes are well separated
N_VERTICES = 40
PLANTED_R2 = 0.5  # signal variance / total variance of every driven vertex
SPACES = f"{BACKBONE}:a+{BACKBONE}:b"
SETTING = dict(pca=6, alphas=[1.0, 10.0, 100.0, 1e3, 1e4], cv=5, join="banded", ratios=4)
LABEL = "pca6-ridge-cv5-banded"
FAST = dict(n_boot=20, progress=False)


def _features(ids: np.ndarray, space: int) -> np.ndarray:
    """Deterministic standard normal features per NSD id and space, columns of decreasing scale."""
    rows = [np.random.default_rng([int(i), space]).standard_normal(WIDTH) for i in ids]
    return (np.stack(rows) * 0.8 ** np.arange(WIDTH)).astype(np.float32)


def _write_store(store: Path, data: Path) -> None:
    ids = np.unique(np.concatenate([list_images(data, 1, split)[0] for split in ("train", "test")]))
    opened = open_store(store, "a")
    layouts = [LayerLayout(name, (WIDTH,), WIDTH) for name in ("a", "b")]
    entry = {"name": BACKBONE, "source": "test", "architecture": "planted", "layers": ["a", "b"]}
    provenance = build_provenance(entry, {"weights": "none", "sha256": "0" * 64}, {}, "float32", 64)
    with opened.lock(BACKBONE):
        plan = opened.plan(BACKBONE, ids, ["a", "b"], 64)
        opened.apply_plan(plan, provenance, layouts)
        for task in plan.tasks:
            rows = plan.nsd_ids[task.compute_from : task.stop]
            for space, name in enumerate(("a", "b")):
                opened.write_chunk(BACKBONE, name, task, _features(rows, space))


def _plant_fmri(data: Path) -> None:
    """lh = space a @ W + noise, rh = space b @ W + noise, each at R^2 = PLANTED_R2 in expectation."""
    ids = list_images(data, 1, "train")[0]
    rng = np.random.default_rng(7)
    folder = data / "subj01" / "training_split" / "training_fmri"
    for space, hemi in enumerate(("lh", "rh")):
        n_vertices = np.load(folder / f"{hemi}_training_fmri.npy", mmap_mode="r").shape[1]
        weights = rng.standard_normal((WIDTH, n_vertices))
        signal = _features(ids, space) @ weights
        noise = rng.standard_normal(signal.shape) * signal.std(axis=0) * np.sqrt((1 - PLANTED_R2) / PLANTED_R2)
        np.save(folder / f"{hemi}_training_fmri.npy", (signal + noise).astype(np.float32))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("banded")
    data = make_demo_data(root / "data", n_subjects=1, n_train=300, n_test=4, n_vertices=N_VERTICES, seed=3)
    _plant_fmri(data)
    _write_store(root / "features.zarr", data)
    models = [f"{BACKBONE}:a", f"{BACKBONE}:b", SPACES]
    results = fit_grid(root / "features.zarr", data, models=models, settings=[SETTING], out=root / "out", **FAST)
    return SimpleNamespace(root=root, data=data, store=root / "features.zarr", results=results)


def _pca_blocks(planted: SimpleNamespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn PCA(6) per space on the devkit training rows -> (X_train, Y_train, X_val, Y_val)."""
    subject = load_subject(planted.data, 1)
    idxs = np.arange(len(subject.train_ids))
    np.random.seed(4)
    np.random.shuffle(idxs)
    n_train = int(0.9 * len(idxs))
    train, val = idxs[:n_train], idxs[n_train:]
    blocks_train, blocks_val = [], []
    for space in (0, 1):
        features = _features(subject.train_ids, space)
        pca = SklearnPCA(n_components=6).fit(features[train])
        blocks_train.append(pca.transform(features[train]))
        blocks_val.append(pca.transform(features[val]))
    fmri = np.concatenate([subject.fmri["lh"], subject.fmri["rh"]], axis=1).astype(np.float64)
    return np.hstack(blocks_train), fmri[train], np.hstack(blocks_val), fmri[val]


def _stacked(results, name: str, model: str = f"{SPACES}:{LABEL}") -> np.ndarray:
    """A per-vertex variable of the results, lh then rh vertices (the grid's stacked order)."""
    row = results[name].sel(model=model, subject=1)
    n_vertices = results["n_vertices"].sel(subject=1).values
    return np.concatenate([row.values[..., i, :n] for i, n in enumerate(n_vertices)], axis=-1)


def test_banded_model_sits_beside_the_single_spaces(planted):
    results = planted.results
    assert results["model"].values.tolist() == [f"{BACKBONE}:a:{LABEL}", f"{BACKBONE}:b:{LABEL}", f"{SPACES}:{LABEL}"]
    assert results["space_name"].sel(model=f"{SPACES}:{LABEL}").values.tolist() == [f"{BACKBONE}:a", f"{BACKBONE}:b"]
    assert results["space_penalty"].dims == ("model", "subject", "space", "hemisphere", "vertex")
    assert results["roi_unique_r2"].dims == ("model", "subject", "space", "hemisphere", "roi")
    # single-space models have no penalties per space nor a partition: NaN there
    assert np.isnan(results["space_penalty"].sel(model=f"{BACKBONE}:a:{LABEL}")).all()
    assert EncoderSetting.from_value(SETTING).to_dict()["ratios"] == 4
    assert "ratios" not in EncoderSetting().to_dict()  # keys of concat settings are unchanged


def test_banded_grid_equals_banded_ridge_on_the_same_pca_blocks(planted):
    x_train, y_train, x_val, y_val = _pca_blocks(planted)
    reference = BandedRidgeCV(spaces=[6, 6], alphas=SETTING["alphas"], ratios=4, cv=5).fit(x_train, y_train)
    y_grid, prediction = predict_validation(planted.results, SPACES, 1)
    np.testing.assert_allclose(y_grid, y_val, rtol=1e-6)
    np.testing.assert_allclose(prediction, reference.predict(x_val), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(_stacked(planted.results, "space_penalty"), reference.best_penalties_)
    # the partition in the results equals encoders.partition run directly on the same blocks
    direct = partition_variance(reference, x_train, y_train, x_val, y_val)
    for ours, theirs in [("unique_r2", "unique"), ("shared_r2", "shared"), ("r2_split", "r2_split")]:
        np.testing.assert_allclose(_stacked(planted.results, ours), direct[theirs].values, atol=1e-3)
    np.testing.assert_allclose(
        _stacked(planted.results, "r2_joint"), r2_score(y_val, prediction, multioutput="raw_values"), atol=1e-4
    )


def test_planted_spaces_get_the_smaller_penalty_and_the_variance(planted):
    """lh is driven by a only, rh by b only: the driving space gets the smaller penalty on most vertices, and the
    validation variance is recovered as unique to it: mean unique R^2 of the driver within 0.15 of the planted
    0.5 (60 validation rows per vertex), of the other space and the shared part within 0.05 of 0."""
    penalty = np.log10(_stacked(planted.results, "space_penalty"))
    n_lh = int(planted.results["n_vertices"].sel(subject=1, hemisphere="lh"))
    lh, rh = slice(0, n_lh), slice(n_lh, None)
    assert np.mean(penalty[0, lh] < penalty[1, lh]) > 0.9
    assert np.mean(penalty[1, rh] < penalty[0, rh]) > 0.9
    for hemi, driver in (("lh", 0), ("rh", 1)):
        roi = planted.results.sel(model=f"{SPACES}:{LABEL}", subject=1, hemisphere=hemi, roi="All vertices")
        assert abs(float(roi["roi_unique_r2"][driver]) - PLANTED_R2) < 0.15
        assert abs(float(roi["roi_unique_r2"][1 - driver])) < 0.05
        assert abs(float(roi["roi_shared_r2"])) < 0.05
        assert abs(float(roi["roi_r2_split"][driver]) - PLANTED_R2) < 0.15
        # per ROI: means over its vertices, so joint = sum of unique + shared holds there too
        total = float(roi["roi_unique_r2"].sum() + roi["roi_shared_r2"])
        assert total == pytest.approx(float(roi["roi_r2_joint"]), abs=1e-9)


def test_partition_table_is_the_mean_of_the_direct_partition_per_roi(planted):
    """Per ROI: encoders.partition's per-vertex partition of the same blocks, averaged over the ROI's vertices
    (`partition_by_roi`) then over the two hemispheres."""
    x_train, y_train, x_val, y_val = _pca_blocks(planted)
    reference = BandedRidgeCV(spaces=[6, 6], alphas=SETTING["alphas"], ratios=4, cv=5)
    direct = partition_variance(reference, x_train, y_train, x_val, y_val)
    atlas = load_subject(planted.data, 1).rois
    rois = ["All vertices", "V1d", "FFA-2", "early"]
    n_lh = int(planted.results["n_vertices"].sel(subject=1, hemisphere="lh"))
    per_hemi = []
    for hemi, part in (("lh", slice(0, n_lh)), ("rh", slice(n_lh, None))):
        masks = {}
        for roi in rois:
            masks[roi] = np.zeros(direct.sizes["vertex"], bool)
            masks[roi][part] = True if roi == "All vertices" else atlas.masks(hemi).get(roi, False)
        per_hemi.append(partition_by_roi(direct, masks))
    expected = xr.concat(per_hemi, dim="hemisphere").mean("hemisphere", skipna=True)  # FFA-2: rh only
    table = partition_table(planted.results, SPACES, rois=rois)
    np.testing.assert_allclose(table["R2 joint"], expected["joint"].values, atol=1e-3)
    np.testing.assert_allclose(table["shared"], expected["shared"].values, atol=1e-3)
    for k, space in enumerate(("a", "b")):
        np.testing.assert_allclose(table[f"unique {BACKBONE}:{space}"], expected["unique"][:, k], atol=1e-3)
        np.testing.assert_allclose(table[f"share {BACKBONE}:{space}"], expected["r2_split"][:, k], atol=1e-3)
    assert table.attrs["model"] == f"{SPACES}:{LABEL}"


def test_partition_without_a_banded_model_is_a_clear_error(planted):
    single = planted.results.sel(model=[f"{BACKBONE}:a:{LABEL}"])
    with pytest.raises(ValueError, match=r"no banded model: fit one with `encoders fit .* --join banded`"):
        partition_table(single)
    with pytest.raises(ValueError, match=r"is not banded"):
        partition_table(planted.results, f"{BACKBONE}:a")


def test_cli_fit_banded_then_partition(planted, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["fit", "--store", str(planted.store), "--data", str(planted.data), "--out", str(out), "--quiet"]
    args += ["--models", f"{BACKBONE}:a", SPACES, "--pca", "6", "--alphas", "1,10,100,1000,10000"]
    args += ["--join", "concat", "banded"]
    assert main([*args, "--ratios", "4", "--n-boot", "20"]) == 0
    results = load_results(out)
    # the single space is fitted once: banded with one space is the concat fit
    models = [f"{BACKBONE}:a:pca6-ridge-cv5", f"{SPACES}:pca6-ridge-cv5", f"{SPACES}:{LABEL}"]
    assert results["model"].values.tolist() == models
    # the CLI's banded model is the grid's: same penalties and partition as fit_grid with the same setting
    for name in ("space_penalty", "unique_r2", "r2_split"):
        np.testing.assert_array_equal(_stacked(results, name), _stacked(planted.results, name))
    capsys.readouterr()
    assert main(["partition", str(out / "results.nc"), "--rois", "All vertices", "V1d"]) == 0
    printed = capsys.readouterr().out
    assert f"{SPACES}:{LABEL}" in printed and "unique planted:a" in printed and "winner" in printed
    saved = pd.read_csv(out / "partition.csv", index_col="roi")
    pd.testing.assert_frame_equal(saved, partition_table(results, rois=["All vertices", "V1d"]), check_names=False)
    assert main(["partition", str(out), "--model", f"{SPACES}:pca6-ridge-cv5"]) == 1  # concat: not banded


def test_partition_figures(planted, tmp_path):
    rois = [roi for roi in planted.results["roi"].values.tolist() if roi != "All vertices"]
    table = partition_table(planted.results, rois=rois)
    path = plot_partition_bars(table, tmp_path / "bars.png")
    assert path.is_file() and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match=r"needs columns 'unique <space>'"):
        plot_partition_bars(table[["R2 joint"]], tmp_path / "bad.png")


def test_an_ensemble_over_a_banded_model_keeps_its_partition(planted):
    results = fit_ensemble(planted.results, "best-per-vertex", inner_folds=3, progress=False)
    assert results["space_name"].sel(model="ensemble:best-per-vertex:cv3").values.tolist() == ["", ""]
    assert np.isnan(results["unique_r2"].sel(model="ensemble:best-per-vertex:cv3")).all()
    np.testing.assert_array_equal(_stacked(results, "unique_r2"), _stacked(planted.results, "unique_r2"))
    assert partition_table(results).attrs["model"] == f"{SPACES}:{LABEL}"


@pytest.mark.parametrize("ridge", ["primal", "kernel"])
def test_banded_test_predictions_without_pca_equal_banded_ridge_on_the_raw_spaces(planted, ridge):
    """`predict_test` (what `encoders submit` writes): all training rows, the raw features of both spaces side by
    side, one BandedRidgeCV (its primal or kernel solver, as ``ridge`` says)."""
    setting = EncoderSetting(pca=None, ridge=ridge, alphas=(1.0, 100.0, 1e4), cv=5, join="banded", ratios=4)
    predictions = predict_test(planted.store, planted.data, SPACES, setting=setting)
    subject = load_subject(planted.data, 1)
    train, test = (np.hstack([_features(ids, 0), _features(ids, 1)]) for ids in (subject.train_ids, subject.test_ids))
    fmri = np.concatenate([subject.fmri["lh"], subject.fmri["rh"]], axis=1)
    reference = BandedRidgeCV([WIDTH, WIDTH], alphas=[1.0, 100.0, 1e4], ratios=4, cv=5, solver="primal")
    expected = reference.fit(train, fmri).predict(test)
    got = np.concatenate([predictions[1]["lh"], predictions[1]["rh"]], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_figures_of_a_banded_model_show_the_planted_winner(planted, tmp_path):
    winner, names = _winning_space(planted.results, f"{SPACES}:{LABEL}", 1)
    assert names == [f"{BACKBONE}:a", f"{BACKBONE}:b"]
    assert np.mean(winner["lh"] == 0) > 0.9 and np.mean(winner["rh"] == 1) > 0.9  # lh driven by a, rh by b
    figures = write_figures(planted.results, tmp_path)
    names = {path.name for path in figures}
    assert {"winning_space_lh.png", "winning_space_rh.png", "partition_per_roi.png"} <= names
