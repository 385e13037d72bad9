"""The model grid on a small demo dataset: result layout, resume, LocalCluster, the devkit recipe, test predictions.

The store holds image thumbnails (a real, content-dependent "layer") written through the store's own writer API,
so the tests need no network forward pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from PIL import Image
from scipy.stats import pearsonr
from sklearn.decomposition import PCA as SklearnPCA
from sklearn.linear_model import LinearRegression, Ridge

import encoders.grid.pipeline as grid_pipeline
from encoders.challenge import list_images, load_subject
from encoders.grid import (
    EncoderSetting,
    MissingFeaturesError,
    fit_grid,
    load_results,
    model_recipe,
    parse_model,
    parse_spaces,
    predict_test,
    predict_validation,
)
from encoders.leaderboard import leaderboard
from encoders.splits import kfold
from featurestore.demo_data import make_demo_data
from featurestore.store import LayerLayout, build_provenance, open_features, open_store

BACKBONE = "thumbnails"
LAYERS = {"rgb8": 8, "rgb12": 12}  # layer -> thumbnail side (features = side * side * 3)
FAST = dict(n_boot=50, progress=False)


def _thumbnail(path: Path, side: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR), np.float32).ravel()


def write_thumbnail_store(store: Path, data_dir: Path, *, skip_ids: int = 0, backbone: str = BACKBONE) -> None:
    """Thumbnail features of every image in ``data_dir`` (minus the last ``skip_ids`` ids) via the store API."""
    paths = {}
    for subject in (1, 2):
        for split in ("train", "test"):
            ids, files = list_images(data_dir, subject, split)
            paths.update(zip(ids.tolist(), files))
    ids = np.array(sorted(paths))[: len(paths) - skip_ids]
    opened = open_store(store, "a")
    layouts = [LayerLayout(name, (side, side, 3), side * side * 3) for name, side in LAYERS.items()]
    entry = {"name": backbone, "source": "test", "architecture": "thumbnail", "layers": list(LAYERS)}
    provenance = build_provenance(
        entry, {"weights": "none", "sha256": "0" * 64}, {"resize": "thumbnail"}, "float32", 64
    )
    with opened.lock(backbone):
        plan = opened.plan(backbone, ids, list(LAYERS), 64)
        opened.apply_plan(plan, provenance, layouts)
        for task in plan.tasks:
            rows = plan.nsd_ids[task.compute_from : task.stop]
            for name, side in LAYERS.items():
                opened.write_chunk(backbone, name, task, np.stack([_thumbnail(paths[i], side) for i in rows]))


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("grid")
    data = make_demo_data(root / "data", n_train=100, n_test=10, n_vertices=150, seed=1)
    write_thumbnail_store(root / "features.zarr", data)
    return SimpleNamespace(root=root, data=data, store=root / "features.zarr")


@pytest.fixture(scope="module")
def fitted(grid_data: SimpleNamespace) -> SimpleNamespace:
    settings = [dict(pca=20, alphas=[1e2, 1e4, 1e6], cv=5), dict(pca=None, ridge="kernel", cv="loo")]
    out = grid_data.root / "results"
    results = fit_grid(grid_data.store, grid_data.data, backbones=[BACKBONE], settings=settings, out=out, **FAST)
    return SimpleNamespace(results=results, out=out, settings=settings)


def test_results_layout_and_file(grid_data, fitted):
    results = fitted.results
    assert list(results["model"].values) == [
        f"{BACKBONE}:{layer}:{label}" for layer in LAYERS for label in ("pca20-ridge-cv5", "full-kernel-loo")
    ]
    assert list(results["layer"].values) == [layer for layer in LAYERS for _ in range(2)]
    assert results["r"].dims == ("model", "subject", "hemisphere", "vertex")
    assert results["roi_median"].dims == ("model", "subject", "hemisphere", "roi")
    assert list(results["subject"].values) == [1, 2] and list(results["hemisphere"].values) == ["lh", "rh"]
    assert results["roi"].values[0] == "All vertices" and "V1v" in results["roi"].values
    for subject in (1, 2):
        fmri = load_subject(grid_data.data, subject).fmri
        for hemi in ("lh", "rh"):
            n = fmri[hemi].shape[1]
            assert int(results["n_vertices"].sel(subject=subject, hemisphere=hemi)) == n
            r = results["r"].sel(subject=subject, hemisphere=hemi).values
            assert np.isfinite(r[:, :n]).all() and np.isnan(r[:, n:]).all()
    all_r = results["roi_median"].sel(roi="All vertices")
    low, high = (results[f"roi_median_{b}"].sel(roi="All vertices") for b in ("low", "high"))
    assert (low <= all_r).all() and (all_r <= high).all()
    assert float(all_r.min()) > 0.1  # thumbnails predict the simulated early-visual signal
    assert np.isfinite(results["val_challenge_score"]).all()  # the demo data has a noise ceiling
    assert results["alpha"].sel(model=results["model"].values[0]).isin([1e2, 1e4, 1e6]).sum() > 0
    assert json.loads(results.attrs["settings"])["pca20-ridge-cv5"]["pca"] == 20
    on_disk = load_results(fitted.out)
    xr.testing.assert_identical(on_disk.drop_vars("model"), results.drop_vars("model"))


def test_roi_medians_and_ceilings_match_masks(grid_data, fitted):
    data = load_subject(grid_data.data, 2)
    results = fitted.results.isel(model=0).sel(subject=2)
    for hemi in ("lh", "rh"):
        n = data.fmri[hemi].shape[1]
        r = results["r"].sel(hemisphere=hemi).values[:n]
        max_r = np.sqrt(data.noise_ceiling[hemi])  # a fraction of explainable variance
        for roi, mask in data.rois.masks(hemi).items():
            row = results.sel(hemisphere=hemi, roi=roi)
            assert float(row["roi_median"]) == pytest.approx(np.median(r[mask]))
            assert float(row["roi_noise_ceiling"]) == pytest.approx(np.median(max_r[mask]), rel=1e-6)
            assert int(row["roi_n_vertices"]) == mask.sum()


def test_validation_challenge_score_follows_the_official_formula(grid_data, fitted):
    """val_challenge_score is the challenge's formula on the stored validation r and the test split's ceiling."""
    for subject in (1, 2):
        data = load_subject(grid_data.data, subject)
        for hemi in ("lh", "rh"):
            n = data.fmri[hemi].shape[1]
            row = fitted.results.sel(subject=subject, hemisphere=hemi)
            for model in fitted.results["model"].values:
                r = row["r"].sel(model=model).values[:n].astype(np.float64)
                nc = data.noise_ceiling[hemi].astype(np.float64)
                expected = np.mean(np.minimum(100 * np.clip(r, 0, None) ** 2 / nc, 100))
                assert float(row["val_challenge_score"].sel(model=model)) == pytest.approx(expected, rel=1e-6)


def test_changed_data_is_never_reused(grid_data, fitted, tmp_path, capsys):
    """Replacing a subject's fMRI (or corrupting it) refits that subject instead of reusing its old numbers."""
    import shutil

    data = Path(shutil.copytree(grid_data.data, tmp_path / "data"))
    out = Path(shutil.copytree(fitted.out, tmp_path / "results"))
    kwargs = dict(models=[f"{BACKBONE}:rgb8"], settings=fitted.settings[:1], out=out, n_boot=50)
    first = fit_grid(grid_data.store, data, **kwargs)
    assert capsys.readouterr().out.count("(reused)") == 2
    path = data / "subj02" / "training_split" / "training_fmri" / "lh_training_fmri.npy"
    noise = np.random.default_rng(0).standard_normal(np.load(path).shape).astype(np.float32)
    np.save(path, noise)
    again = fit_grid(grid_data.store, data, **kwargs)
    assert capsys.readouterr().out.count("(reused)") == 1  # subj01 only
    r_old, r_new = (
        res["roi_median"].sel(subject=2, hemisphere="lh", roi="All vertices").item() for res in (first, again)
    )
    assert r_new < r_old - 0.1  # the noise predicts nothing: fresh numbers, not the old ones
    xr.testing.assert_equal(again.sel(subject=1), first.sel(subject=1))  # attrs name the new fingerprint
    noise[3, 4] = np.nan
    np.save(path, noise)
    with pytest.raises(ValueError, match=r"lh_training_fmri.npy: fMRI has 1 NaN"):
        fit_grid(grid_data.store, data, **kwargs)


def test_rerun_reuses_every_finished_combination(grid_data, fitted, capsys):
    files = sorted((fitted.out / "combinations").glob("*.nc"))
    assert len(files) == 2 * 2 * 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = fit_grid(
        grid_data.store, grid_data.data, backbones=[BACKBONE], settings=fitted.settings, out=fitted.out, n_boot=50
    )
    assert [f.stat().st_mtime_ns for f in sorted((fitted.out / "combinations").glob("*.nc"))] == mtimes
    assert capsys.readouterr().out.count("(reused)") == 8
    xr.testing.assert_identical(again, fitted.results)


def test_streamed_features_give_the_same_results(grid_data, fitted, tmp_path, monkeypatch):
    """Layers too large for memory are streamed block by block (PCA, kernel ridge): same numbers."""
    monkeypatch.setattr(grid_pipeline, "IN_MEMORY_BYTES", 0)
    streamed = fit_grid(
        grid_data.store,
        grid_data.data,
        models=[f"{BACKBONE}:rgb12"],
        subjects=[2],
        settings=fitted.settings,
        out=tmp_path,
        n_workers=2,
        **FAST,
    )
    expected = (
        fitted.results.sel(model=streamed["model"].values, subject=[2])
        .isel(vertex=slice(0, streamed.sizes["vertex"]))
        .sel(roi=streamed["roi"].values)
    )
    for name in ("r", "alpha", "roi_median"):
        np.testing.assert_allclose(streamed[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_changed_setting_is_a_new_combination(grid_data, fitted):
    before = set((fitted.out / "combinations").glob("*.nc"))
    fit_grid(
        grid_data.store,
        grid_data.data,
        models=[f"{BACKBONE}:rgb8"],
        subjects=[1],
        settings=[dict(pca=20, alphas=[1e2, 1e4], cv=5)],
        out=fitted.out,
        **FAST,
    )
    assert len(set((fitted.out / "combinations").glob("*.nc")) - before) == 1


def test_local_cluster_matches_threads(grid_data, tmp_path):
    distributed = pytest.importorskip("distributed")
    kwargs = dict(models=[f"{BACKBONE}:rgb8"], settings=[dict(pca=10, cv=3)], **FAST)
    threaded = fit_grid(
        grid_data.store, grid_data.data, out=tmp_path / "threads", scheduler="threads", n_workers=2, **kwargs
    )
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            clustered = fit_grid(grid_data.store, grid_data.data, out=tmp_path / "cluster", scheduler=client, **kwargs)
    for name in ("r", "alpha", "roi_median", "roi_median_boot", "val_challenge_score"):
        np.testing.assert_allclose(clustered[name], threaded[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _devkit_recipe(store: Path, data_dir: Path, subject: int, layer: str) -> dict[str, float]:
    """The Algonauts 2023 devkit, step by step: the notebook's seed-4 90/10 split, PCA(50), LinearRegression,
    scipy pearsonr."""
    data = load_subject(data_dir, subject)
    features = open_features(store, BACKBONE, layer).sel(nsd_id=data.train_ids).values.astype(np.float32)
    idxs = np.arange(len(data.train_ids))
    np.random.seed(4)
    np.random.shuffle(idxs)
    num_train = int(np.round(len(idxs) / 100 * 90))
    idxs_train, idxs_val = idxs[:num_train], idxs[num_train:]
    pca = SklearnPCA(n_components=50).fit(features[idxs_train])
    features_train, features_val = pca.transform(features[idxs_train]), pca.transform(features[idxs_val])
    medians = {}
    for hemi in ("lh", "rh"):
        fmri = np.asarray(data.fmri[hemi])
        reg = LinearRegression().fit(features_train, fmri[idxs_train])
        pred = reg.predict(features_val)
        correlation = np.zeros(pred.shape[1])
        for v in range(pred.shape[1]):
            correlation[v] = pearsonr(pred[:, v], fmri[idxs_val][:, v])[0]
        medians[hemi] = float(np.median(correlation))
    return medians


def test_devkit_recipe_reproduced(grid_data, tmp_path):
    results = fit_grid(
        grid_data.store,
        grid_data.data,
        models=[f"{BACKBONE}:rgb12"],
        settings=[dict(pca=50, alphas=[0.0])],
        out=tmp_path,
        **FAST,
    )
    assert results["model"].values.tolist() == [f"{BACKBONE}:rgb12:pca50-ols"]
    for subject in (1, 2):
        expected = _devkit_recipe(grid_data.store, grid_data.data, subject, "rgb12")
        for hemi, median in expected.items():
            got = results["roi_median"].sel(subject=subject, hemisphere=hemi, roi="All vertices").item()
            assert got == pytest.approx(median, abs=1e-5)


def _sklearn_ridge_per_vertex_alpha(X, Y, alphas, folds, X_new):
    """Reference: per alpha and fold an sklearn Ridge; per vertex the alpha with the lowest CV MSE; refit."""
    cv_mse = np.zeros((len(alphas), Y.shape[1]))
    for a, alpha in enumerate(alphas):
        for train, val in folds:
            pred = Ridge(alpha=alpha).fit(X[train], Y[train]).predict(X[val])
            cv_mse[a] += ((pred - Y[val]) ** 2).sum(axis=0)
    best = np.asarray(alphas)[np.argmin(cv_mse, axis=0)]
    out = np.zeros((X_new.shape[0], Y.shape[1]))
    for alpha in np.unique(best):
        cols = best == alpha
        out[:, cols] = Ridge(alpha=alpha).fit(X, Y[:, cols]).predict(X_new)
    return out, best


def test_ridge_per_vertex_alpha_matches_sklearn(grid_data, fitted):
    """The grid's PCA-20 ridge equals sklearn PCA + Ridge with alpha chosen per vertex on the same folds."""
    model = f"{BACKBONE}:rgb8:pca20-ridge-cv5"
    data = load_subject(grid_data.data, 1)
    y_val, prediction = predict_validation(fitted.results, model, 1)
    features = open_features(grid_data.store, BACKBONE, "rgb8").sel(nsd_id=data.train_ids).values
    idxs = np.arange(len(data.train_ids))
    np.random.seed(4)
    np.random.shuffle(idxs)
    train, val = idxs[:90], idxs[90:]
    fmri = np.concatenate([data.fmri["lh"], data.fmri["rh"]], axis=1)
    pca = SklearnPCA(n_components=20).fit(features[train])
    expected, best = _sklearn_ridge_per_vertex_alpha(
        pca.transform(features[train]),
        fmri[train],
        [1e2, 1e4, 1e6],
        kfold(len(train), 5, seed=0),
        pca.transform(features[val]),
    )
    np.testing.assert_allclose(y_val, fmri[val])
    np.testing.assert_allclose(prediction, expected, rtol=1e-4, atol=1e-4)
    n_lh = data.fmri["lh"].shape[1]
    stored = fitted.results.sel(model=model, subject=1, hemisphere="lh")
    np.testing.assert_array_equal(stored["alpha"].values[:n_lh], best[:n_lh])
    r = np.array([pearsonr(prediction[:, v], y_val[:, v])[0] for v in range(n_lh)])
    np.testing.assert_allclose(stored["r"].values[:n_lh], r, atol=1e-5)


def test_predict_test_shapes_and_refit_on_all_training(grid_data):
    setting = EncoderSetting(pca=20, alphas=(1e3,), cv=2)
    predictions = predict_test(grid_data.store, grid_data.data, f"{BACKBONE}:rgb8", setting=setting)
    for subject in (1, 2):
        data = load_subject(grid_data.data, subject)
        train = open_features(grid_data.store, BACKBONE, "rgb8").sel(nsd_id=data.train_ids).values
        test = open_features(grid_data.store, BACKBONE, "rgb8").sel(nsd_id=data.test_ids).values
        pca = SklearnPCA(n_components=20).fit(train)
        for hemi in ("lh", "rh"):
            got = predictions[subject][hemi]
            assert got.dtype == np.float32 and got.shape == (10, data.fmri[hemi].shape[1])
            expected = Ridge(alpha=1e3).fit(pca.transform(train), data.fmri[hemi]).predict(pca.transform(test))
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_missing_features_name_layer_count_and_command(grid_data, tmp_path):
    partial = tmp_path / "partial.zarr"
    write_thumbnail_store(partial, grid_data.data, skip_ids=7)
    with pytest.raises(
        MissingFeaturesError,
        match=r"thumbnails/rgb8 features for \d+ of 100 images.*featurestore "
        r"extract --backbone thumbnails --layers rgb8",
    ):
        fit_grid(
            partial,
            grid_data.data,
            models=[f"{BACKBONE}:rgb8"],
            subjects=[1, 2],
            out=tmp_path / "out",
            scheduler="synchronous",
            **FAST,
        )


@pytest.mark.parametrize(
    "setting, match",
    [
        (dict(ridge="qr"), r"Unknown ridge='qr'"),
        (dict(cv=1), r"Invalid cv=1"),
        (dict(pca=0), r"Invalid pca=0"),
        (dict(alphas=[-1.0]), r"Invalid alphas"),
        (dict(pcs=10), r"Unknown encoder setting keys \['pcs'\]"),
    ],
)
def test_bad_settings(setting, match):
    with pytest.raises(ValueError, match=match):
        EncoderSetting.from_value(setting)


def test_setting_labels_and_model_parsing():
    assert EncoderSetting().label == "pca100-ridge-cv5"
    assert EncoderSetting(pca=50, alphas=(0,)).label == "pca50-ols"
    assert EncoderSetting(pca=None, ridge="kernel", cv="loo").label == "full-kernel-loo"
    assert EncoderSetting(pca=None, ridge="kernel", cv="gcv").label == "full-kernel-gcv"
    assert EncoderSetting(name="mine").label == "mine"
    assert parse_model("ViT-B-32.openai:transformer.resblocks.5") == ("ViT-B-32.openai", "transformer.resblocks.5")
    with pytest.raises(ValueError, match="expected 'backbone:layer'"):
        parse_model("alexnet")


def test_unknown_scheduler(grid_data, tmp_path):
    with pytest.raises(ValueError, match="Unknown scheduler='gpu'"):
        fit_grid(
            grid_data.store,
            grid_data.data,
            models=[f"{BACKBONE}:rgb8"],
            subjects=[1],
            out=tmp_path,
            scheduler="gpu",
            **FAST,
        )


def test_results_written_before_the_official_score_still_load(fitted, tmp_path):
    """An older results file (percent ceiling, its own noise-normalised figure) loads; the old figure is dropped."""
    old = fitted.results.rename({"val_challenge_score": "noise_normalized"})
    old["noise_ceiling"] = old["noise_ceiling"] * 100
    old.to_netcdf(tmp_path / "results.nc", engine="scipy")
    with pytest.warns(UserWarning, match="written by an older version"):
        loaded = load_results(tmp_path)
    assert "noise_normalized" not in loaded and "noise_ceiling" not in loaded
    xr.testing.assert_identical(loaded["roi_median"], fitted.results["roi_median"])


def test_the_old_setting_key_still_reads_with_a_warning():
    """Results files written before name the estimator form 'solver' (now 'ridge', as RidgeCV's own solver differs)."""
    with pytest.warns(FutureWarning, match="'solver' is now called 'ridge'"):
        setting = EncoderSetting.from_value(dict(pca=None, solver="kernel", cv="loo"))
    assert setting == EncoderSetting(pca=None, ridge="kernel", cv="loo")


TWO_SPACES = f"{BACKBONE}:rgb8+{BACKBONE}:rgb12"


@pytest.fixture(scope="module")
def two_spaces(grid_data: SimpleNamespace) -> SimpleNamespace:
    """A model of two feature spaces fitted beside its two single-space models (subject 1). PCA 8: both spaces'
    8th and 9th eigenvalues are far apart (ratio > 1.4), so the kept subspace is well defined in float32; alphas from
    1e4: two thumbnail sizes of one image are nearly collinear, and smaller penalties leave float32 and float64
    solutions apart along that direction."""
    setting = dict(pca=8, alphas=[1e4, 1e5, 1e6], cv=5)
    models = [f"{BACKBONE}:rgb8", f"{BACKBONE}:rgb12", TWO_SPACES]
    out = grid_data.root / "two_spaces"
    results = fit_grid(
        grid_data.store, grid_data.data, models=models, subjects=[1], settings=[setting], out=out, **FAST
    )
    return SimpleNamespace(results=results, out=out, setting=setting)


def test_a_model_of_two_spaces_sits_beside_single_layers(two_spaces):
    results = two_spaces.results
    label = "pca8-ridge-cv5"
    assert results["model"].values.tolist() == [
        f"{BACKBONE}:rgb8:{label}",
        f"{BACKBONE}:rgb12:{label}",
        f"{TWO_SPACES}:{label}",
    ]
    assert results["spaces"].values.tolist() == [f"{BACKBONE}:rgb8", f"{BACKBONE}:rgb12", TWO_SPACES]
    assert results["layer"].values.tolist() == ["rgb8", "rgb12", "rgb8+rgb12"]
    assert results["backbone"].values.tolist() == [BACKBONE] * 3
    assert results["n_components"].sel(subject=1).values.tolist() == [8, 8, 16]  # PCA 8 per space
    assert np.isfinite(results["roi_median"].sel(roi="All vertices")).all()
    table = leaderboard(results)
    assert f"{TWO_SPACES}:{label}" in table.index
    assert model_recipe(results, TWO_SPACES) == (
        ((BACKBONE, "rgb8"), (BACKBONE, "rgb12")),
        EncoderSetting.from_value(two_spaces.setting),
    )


def test_two_spaces_equal_sklearn_pca_per_space_concatenated(grid_data, two_spaces):
    """The concat join: sklearn PCA(8) fitted on each space's training rows, components side by side, ridge with
    the alpha chosen per vertex on the same folds (scikit-learn Ridge in a loop)."""
    data = load_subject(grid_data.data, 1)
    y_val, prediction = predict_validation(two_spaces.results, TWO_SPACES, 1)
    idxs = np.arange(len(data.train_ids))
    np.random.seed(4)
    np.random.shuffle(idxs)
    train, val = idxs[:90], idxs[90:]
    blocks_train, blocks_val = [], []
    for layer in ("rgb8", "rgb12"):
        features = open_features(grid_data.store, BACKBONE, layer).sel(nsd_id=data.train_ids).values
        pca = SklearnPCA(n_components=8).fit(features[train])
        blocks_train.append(pca.transform(features[train]))
        blocks_val.append(pca.transform(features[val]))
    fmri = np.concatenate([data.fmri["lh"], data.fmri["rh"]], axis=1)
    expected, best = _sklearn_ridge_per_vertex_alpha(
        np.hstack(blocks_train), fmri[train], [1e4, 1e5, 1e6], kfold(len(train), 5, seed=0), np.hstack(blocks_val)
    )
    np.testing.assert_allclose(prediction, expected, rtol=1e-4, atol=1e-4)
    n_lh = data.fmri["lh"].shape[1]
    stored = two_spaces.results.sel(model=f"{TWO_SPACES}:pca8-ridge-cv5", subject=1, hemisphere="lh")
    np.testing.assert_array_equal(stored["alpha"].values[:n_lh], best[:n_lh])


def test_two_spaces_without_pca_equal_one_ridge_on_the_raw_features_side_by_side(grid_data):
    setting = EncoderSetting(pca=None, alphas=(1e5,), cv=2)
    predictions = predict_test(grid_data.store, grid_data.data, TWO_SPACES, setting=setting, subjects=[2])
    data = load_subject(grid_data.data, 2)
    train, test = (
        np.hstack([open_features(grid_data.store, BACKBONE, layer).sel(nsd_id=ids).values for layer in LAYERS])
        for ids in (data.train_ids, data.test_ids)
    )
    expected = Ridge(alpha=1e5).fit(train, data.fmri["lh"]).predict(test)
    np.testing.assert_allclose(predictions[2]["lh"], expected, rtol=1e-3, atol=1e-3)


def test_spaces_parsing():
    pair = (BACKBONE, "rgb8")
    assert parse_spaces(f"{BACKBONE}:rgb8") == (pair,)
    assert parse_spaces(pair) == (pair,)
    assert parse_spaces(TWO_SPACES) == (pair, (BACKBONE, "rgb12"))
    assert parse_spaces([f"{BACKBONE}:rgb8", (BACKBONE, "rgb12")]) == (pair, (BACKBONE, "rgb12"))
    with pytest.raises(ValueError, match=r"names the feature space thumbnails:rgb8 twice"):
        parse_spaces(f"{BACKBONE}:rgb8+{BACKBONE}:rgb8")
    with pytest.raises(ValueError, match=r"expected 'backbone:layer'"):
        parse_spaces(f"{BACKBONE}:rgb8+")


def test_a_space_given_twice_or_missing_from_the_store(grid_data, tmp_path):
    kwargs = dict(subjects=[1], out=tmp_path, **FAST)
    with pytest.raises(ValueError, match=r"names the feature space thumbnails:rgb12 twice"):
        fit_grid(grid_data.store, grid_data.data, models=[f"{BACKBONE}:rgb12+{BACKBONE}:rgb12"], **kwargs)
    with pytest.raises(MissingFeaturesError, match=r"model 'thumbnails:rgb8\+thumbnails:conv9'.*No layer 'conv9'"):
        fit_grid(grid_data.store, grid_data.data, models=[f"{BACKBONE}:rgb8+{BACKBONE}:conv9"], **kwargs)
    assert not list(tmp_path.glob("*/*.nc"))  # refused before anything was fitted


def test_spaces_with_different_images_name_the_missing_ids(grid_data, tmp_path):
    store = tmp_path / "two.zarr"
    write_thumbnail_store(store, grid_data.data)
    write_thumbnail_store(store, grid_data.data, skip_ids=3, backbone="partial")
    data = load_subject(grid_data.data, 1)
    all_ids = sorted(set(open_features(store, BACKBONE, "rgb8")["nsd_id"].values.tolist()))
    missing = sorted(set(all_ids[-3:]) & set(data.train_ids.tolist()))
    assert missing  # the fixture's last ids include training images of subject 1
    with pytest.raises(MissingFeaturesError) as error:
        fit_grid(store, grid_data.data, models=[f"{BACKBONE}:rgb8+partial:rgb8"], subjects=[1], out=tmp_path, **FAST)
    message = str(error.value)
    assert "feature space partial:rgb8 lacks" in message and "(thumbnails:rgb8 has them)" in message
    assert f"NSD ids {missing}" in message
