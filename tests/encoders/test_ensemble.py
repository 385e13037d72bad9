"""Ensembles from a fitted grid, on a planted simulation: the early-visual stream is driven by feature space s1, every
other vertex by space s2. The choices (best model per ROI, per vertex, the top k and their weights) are checked
against an exhaustive computation with scikit-learn (Ridge, cross_val_predict on the same shuffled KFold of the
training rows), the scores against the weighted scikit-learn predictions of the validation and test images.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import pearsonr
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_predict

import encoders.ensemble as ensemble_module
import encoders.grid.pipeline as pipeline_module
from encoders.challenge import list_images, load_subject
from encoders.cli import main
from encoders.ensemble import (
    EnsembleRecipe,
    fit_ensemble,
    predict_ensemble_test,
    predict_model_validation,
    selection_weights,
)
from encoders.grid import fit_grid, load_results
from encoders.grid.pipeline import results_context
from encoders.leaderboard import compare, leaderboard
from encoders.splits import devkit_split
from encoders.submission import read_submission
from encoders.submit import write_test_submission
from featurestore.demo_data import make_demo_data
from featurestore.store import LayerLayout, build_provenance, open_store

BACKBONE = "planted"
N_FEATURES = 6
ALPHA = 1.0
MEMBERS = [f"{BACKBONE}:s1", f"{BACKBONE}:s2", f"{BACKBONE}:s1+{BACKBONE}:s2"]
SETTING = dict(pca=None, alphas=[ALPHA], cv=5)  # one alpha: the inner fits are exactly sklearn Ridge(alpha=1)
LABEL = "full-ridge-cv5"
FAST = dict(n_boot=50, progress=False)


def _features(ids: np.ndarray, space: int) -> np.ndarray:
    """Features of each NSD id in one space: a seeded draw per (id, space), so every subject sees the same."""
    return np.stack([np.random.default_rng([int(i), space]).standard_normal(N_FEATURES) for i in ids]).astype(
        np.float32
    )


def _write_store(store: Path, ids: np.ndarray) -> None:
    opened = open_store(store, "a")
    layers = {"s1": 1, "s2": 2}
    entry = {"name": BACKBONE, "source": "test", "architecture": "planted", "layers": list(layers)}
    provenance = build_provenance(entry, {"weights": "none", "sha256": "0" * 64}, {}, "float32", 64)
    with opened.lock(BACKBONE):
        plan = opened.plan(BACKBONE, ids, list(layers), 64)
        opened.apply_plan(plan, provenance, [LayerLayout(n, (N_FEATURES,), N_FEATURES) for n in layers])
        for task in plan.tasks:
            rows = plan.nsd_ids[task.compute_from : task.stop]
            for name, space in layers.items():
                opened.write_chunk(BACKBONE, name, task, _features(rows, space))


def _plant(data: Path) -> None:
    """Training fMRI: early-stream vertices = s1 features x random weights + noise; every other vertex from s2."""
    rng = np.random.default_rng(7)
    for subject in (1, 2):
        ids = list_images(data, subject, "train")[0]
        atlas = load_subject(data, subject).rois
        for hemi in ("lh", "rh"):
            path = data / f"subj{subject:02d}" / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy"
            n = np.load(path).shape[1]
            early = atlas.mask(hemi, "early")
            fmri = np.where(
                early,
                _features(ids, 1) @ rng.standard_normal((N_FEATURES, n)),
                _features(ids, 2) @ rng.standard_normal((N_FEATURES, n)),
            )
            np.save(path, (fmri + 2.0 * rng.standard_normal(fmri.shape)).astype(np.float32))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("ensemble")
    data = make_demo_data(root / "data", n_train=100, n_test=10, n_vertices=120, seed=3)
    _plant(data)
    ids = np.unique(np.concatenate([list_images(data, s, split)[0] for s in (1, 2) for split in ("train", "test")]))
    _write_store(root / "features.zarr", ids)
    results = fit_grid(root / "features.zarr", data, models=MEMBERS, settings=[SETTING], out=root / "results", **FAST)
    return SimpleNamespace(root=root, data=data, store=root / "features.zarr", results=results)


def _member_features(model: str, ids: np.ndarray) -> np.ndarray:
    spaces = [int(part.split(":s")[1]) for part in model.split("+")]
    return np.hstack([_features(ids, space) for space in spaces])


def _reference(planted: SimpleNamespace, subject: int) -> SimpleNamespace:
    """Exhaustively, with scikit-learn: each member's cross-validated r per vertex (Ridge, cross_val_predict on
    KFold(5, shuffle=True, random_state=0) of the training rows), and its validation predictions."""
    data = load_subject(planted.data, subject)
    train, val = devkit_split(data.n_train)
    fmri = np.concatenate([data.fmri["lh"], data.fmri["rh"]], axis=1).astype(np.float64)
    cv_r, val_pred = [], []
    for model in MEMBERS:
        X = _member_features(model, data.train_ids).astype(np.float64)
        folds = KFold(5, shuffle=True, random_state=0)
        oof = cross_val_predict(Ridge(alpha=ALPHA), X[train], fmri[train], cv=folds)
        cv_r.append([pearsonr(oof[:, v], fmri[train][:, v])[0] for v in range(fmri.shape[1])])
        val_pred.append(Ridge(alpha=ALPHA).fit(X[train], fmri[train]).predict(X[val]))
    n_lh = data.fmri["lh"].shape[1]
    early = np.concatenate([data.rois.mask(hemi, "early") for hemi in ("lh", "rh")])
    return SimpleNamespace(
        cv_r=np.array(cv_r), val_pred=np.array(val_pred), y_val=fmri[val], n_lh=n_lh, early=early, data=data
    )


def _stacked_weights(results: xr.Dataset, model: str, subject: int, n_lh: int) -> np.ndarray:
    table = results["ensemble_weight"].sel(ensemble=model, subject=subject, member=MEMBERS_IDS)
    n_rh = int(results["n_vertices"].sel(subject=subject, hemisphere="rh"))
    return np.concatenate([table.sel(hemisphere="lh").values[:, :n_lh], table.sel(hemisphere="rh").values[:, :n_rh]], 1)


MEMBERS_IDS = [f"{m}:{LABEL}" for m in MEMBERS]


@pytest.fixture(scope="module")
def ensembles(planted: SimpleNamespace) -> xr.Dataset:
    results = planted.results
    cache = planted.root / "results" / "ensembles"
    for method in ("best-per-roi", "best-per-vertex", "top-k-average"):
        results = fit_ensemble(results, method, k=2, cache_dir=cache, progress=False)
    return results


def test_best_per_roi_picks_the_planted_space_as_an_exhaustive_search_does(planted, ensembles):
    model = "ensemble:best-per-roi:streams-cv5"
    for subject in (1, 2):
        ref = _reference(planted, subject)
        weights = _stacked_weights(ensembles, model, subject, ref.n_lh)
        atlas = ref.data.rois
        for hemi, offset, n in (("lh", 0, ref.n_lh), ("rh", ref.n_lh, weights.shape[1] - ref.n_lh)):
            labels = atlas.labels(hemi, "streams")
            for label in np.unique(labels):
                group = np.zeros(weights.shape[1], dtype=bool)
                group[offset : offset + n] = labels == label
                best = int(np.argmax([np.median(r[group]) for r in ref.cv_r]))
                expected = np.zeros((len(MEMBERS), group.sum()))
                expected[best] = 1.0
                np.testing.assert_array_equal(weights[:, group], expected)
                # the planted truth: early vertices from space s1 alone, the rest from s2 alone (or with s1 too)
                assert best == 0 if atlas.mapping("streams")[int(label)] == "early" else best in (1, 2)


def test_best_per_vertex_and_top_k_weights_equal_the_exhaustive_computation(planted, ensembles):
    for subject in (1, 2):
        ref = _reference(planted, subject)
        best = _stacked_weights(ensembles, "ensemble:best-per-vertex:cv5", subject, ref.n_lh)
        np.testing.assert_array_equal(np.argmax(best, axis=0), np.argmax(ref.cv_r, axis=0))
        assert set(np.unique(best)) == {0.0, 1.0}
        top = _stacked_weights(ensembles, "ensemble:top-k-average:k2-cv5", subject, ref.n_lh)
        for v in range(ref.cv_r.shape[1]):
            order = np.argsort(-ref.cv_r[:, v], kind="stable")[:2]
            r = np.clip(ref.cv_r[order, v], 0, None)
            expected = np.zeros(len(MEMBERS))
            expected[order] = r / r.sum() if r.sum() > 0 else 0.5
            np.testing.assert_allclose(top[:, v], expected, atol=2e-4)


def test_ensembles_are_scored_on_the_validation_rows_like_any_model(planted, ensembles):
    """The ensemble's stored r = Pearson r of the weighted scikit-learn validation predictions (members fitted on
    the training rows only); its ROI medians and intervals sit in the leaderboard beside the members."""
    for model in ("ensemble:best-per-roi:streams-cv5", "ensemble:top-k-average:k2-cv5"):
        for subject in (1, 2):
            ref = _reference(planted, subject)
            weights = _stacked_weights(ensembles, model, subject, ref.n_lh)
            prediction = np.einsum("mv,miv->iv", weights, ref.val_pred)
            r = [pearsonr(prediction[:, v], ref.y_val[:, v])[0] for v in range(ref.n_lh)]
            stored = ensembles["r"].sel(model=model, subject=subject, hemisphere="lh").values[: ref.n_lh]
            np.testing.assert_allclose(stored, r, atol=2e-4)
            y_val, pred = predict_model_validation(ensembles, model, subject)
            np.testing.assert_allclose(pred, prediction, atol=2e-3)
    table = leaderboard(ensembles)
    assert {"ensemble:best-per-roi:streams-cv5", "ensemble:best-per-vertex:cv5"} <= set(table.index)
    assert table.loc["ensemble:best-per-roi:streams-cv5", "backbone"] == "ensemble"
    boot = ensembles["roi_median_boot"].sel(model="ensemble:best-per-vertex:cv5", roi="All vertices")
    assert np.isfinite(boot).all()
    # the planted truth: every single space misses half the brain, the per-ROI choice gets both halves
    best_single = table.loc[MEMBERS_IDS[:2], "All vertices"].max()
    assert table.loc["ensemble:best-per-roi:streams-cv5", "All vertices"] > best_single


def test_compare_and_results_file_round_trip(planted, ensembles, tmp_path):
    comparison = compare(ensembles, MEMBERS_IDS[0], "ensemble:best-per-roi", n_boot=50)
    for subject in (1, 2):
        ref = _reference(planted, subject)
        weights = _stacked_weights(ensembles, "ensemble:best-per-roi:streams-cv5", subject, ref.n_lh)
        prediction = np.einsum("mv,miv->iv", weights, ref.val_pred)
        r = [pearsonr(prediction[:, v], ref.y_val[:, v])[0] for v in range(prediction.shape[1])]
        assert comparison.per_subject[subject].b.estimate == pytest.approx(np.median(r), abs=1e-4)
    ensembles.to_netcdf(tmp_path / "results.nc", engine="scipy")
    again = load_results(tmp_path)
    xr.testing.assert_identical(again["ensemble_weight"], ensembles["ensemble_weight"])
    assert set(json.loads(again.attrs["ensembles"])) == {
        "ensemble:best-per-roi:streams-cv5",
        "ensemble:best-per-vertex:cv5",
        "ensemble:top-k-average:k2-cv5",
    }


def test_submitting_an_ensemble_refits_members_on_all_training_rows(planted, ensembles, tmp_path):
    model = "ensemble:top-k-average:k2-cv5"
    predictions = predict_ensemble_test(ensembles, model, subjects=[2])
    data = load_subject(planted.data, 2)
    fmri = np.concatenate([data.fmri["lh"], data.fmri["rh"]], axis=1)
    weights = _stacked_weights(ensembles, model, 2, data.fmri["lh"].shape[1])
    expected = sum(
        w
        * Ridge(alpha=ALPHA).fit(_member_features(m, data.train_ids), fmri).predict(_member_features(m, data.test_ids))
        for m, w in zip(MEMBERS, weights)
    )
    got = np.concatenate([predictions[2]["lh"], predictions[2]["rh"]], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    archive = write_test_submission(ensembles, tmp_path / "submission", model=model)
    written = read_submission(archive, planted.data)
    np.testing.assert_allclose(written[2]["lh"], predictions[2]["lh"], atol=1e-5)


def test_a_second_method_reuses_the_cached_cross_validation(planted, ensembles, monkeypatch):
    """The members' cross-validated r are cached per member and subject: no inner fit runs again."""
    assert len(list((planted.root / "results" / "ensembles").glob("*__inner5-seed0.nc"))) == len(MEMBERS) * 2

    def no_inner_fit(*args, **kwargs):
        raise AssertionError("an inner fit ran although its cross-validated r was cached")

    monkeypatch.setattr(ensemble_module, "fit_encoder", no_inner_fit)
    again = fit_ensemble(
        planted.results, "best-per-vertex", cache_dir=planted.root / "results" / "ensembles", progress=False
    )
    xr.testing.assert_equal(
        again["r"].sel(model="ensemble:best-per-vertex:cv5"), ensembles["r"].sel(model="ensemble:best-per-vertex:cv5")
    )


@pytest.mark.parametrize("in_memory", [True, False], ids=["read-once", "streamed-per-fold"])
def test_inner_cross_validation_equals_scikit_learn_with_rows_read_once_or_streamed(planted, monkeypatch, in_memory):
    """Each member's training rows are read once and sliced per fold, or streamed per fold when too large for
    memory: both give scikit-learn's cross-validated r (cross_val_predict on the same KFold)."""
    if not in_memory:
        monkeypatch.setattr(pipeline_module, "IN_MEMORY_BYTES", 0)
    recipe = EnsembleRecipe("best-per-vertex", tuple(MEMBERS_IDS))
    ctx = results_context(planted.results)
    ref = _reference(planted, 1)
    got = [ensemble_module._cached_cv_r(planted.results, m, ref.data, recipe, None, ctx) for m in MEMBERS_IDS]
    np.testing.assert_allclose(np.array(got), ref.cv_r, atol=1e-4)


def test_fits_run_side_by_side_give_the_serial_result_and_restore_torch_threads(planted, ensembles):
    """n_workers=3 (inner CVs and final fits on three threads, torch single-threaded meanwhile) and n_workers=1
    give the same ensemble; torch's thread count is what it was before."""
    threads = torch.get_num_threads()
    side_by_side = fit_ensemble(planted.results, "top-k-average", k=2, n_workers=3, progress=False)
    assert torch.get_num_threads() == threads
    serial = fit_ensemble(planted.results, "top-k-average", k=2, n_workers=1, progress=False)
    model = "ensemble:top-k-average:k2-cv5"
    xr.testing.assert_equal(side_by_side["ensemble_weight"], serial["ensemble_weight"])
    xr.testing.assert_equal(side_by_side["r"].sel(model=model), serial["r"].sel(model=model))
    xr.testing.assert_allclose(serial["r"].sel(model=model), ensembles["r"].sel(model=model), atol=1e-6)


def test_members_fitted_with_different_splits_are_refused(planted, tmp_path):
    other = fit_grid(
        planted.store,
        planted.data,
        models=MEMBERS[:1],
        settings=[dict(SETTING, name="seed5")],
        split_seed=5,
        out=tmp_path,
        **FAST,
    )
    mixed = xr.concat([planted.results, other], dim="model", data_vars="minimal", coords="minimal", compat="override")
    with pytest.raises(ValueError, match=r"different train/validation splits \(split seed 4: .*; split seed 5: "):
        fit_ensemble(mixed, "best-per-vertex", progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="best-of-all"), r"Unknown ensemble method='best-of-all'"),
        (dict(method="top-k-average", k=4), r"top-k-average needs 2 <= k <= 3"),
        (dict(method="best-per-roi", roi_class="lobes"), r"Unknown roi_class='lobes'"),
        (dict(method="best-per-vertex", members=[MEMBERS_IDS[0]]), r"at least 2 member models"),
    ],
)
def test_bad_ensemble_arguments(planted, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_ensemble(planted.results, progress=False, **kwargs)


def test_an_ensemble_is_not_a_member_of_another(ensembles):
    with pytest.raises(ValueError, match=r"members must be fitted models, not ensembles"):
        fit_ensemble(ensembles, "best-per-vertex", members=["ensemble:best-per-roi", MEMBERS_IDS[0]], progress=False)


def test_selection_weights_on_a_known_table():
    cv_r = np.array([[0.1, 0.5, np.nan, -0.2], [0.3, 0.4, 0.2, -0.1], [0.2, 0.6, 0.1, -0.3]])
    np.testing.assert_array_equal(np.argmax(selection_weights(cv_r, "best-per-vertex"), 0), [1, 2, 1, 1])
    groups = [("a", np.array([True, True, False, False])), ("b", np.array([False, False, True, True]))]
    roi = selection_weights(cv_r, "best-per-roi", groups=groups)
    np.testing.assert_array_equal(roi, [[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]])  # medians a: .3/.35/.4
    top = selection_weights(cv_r, "top-k-average", k=2)
    np.testing.assert_allclose(top[:, 0], [0, 0.6, 0.4])
    np.testing.assert_allclose(top[:, 3], [0.5, 0.5, 0])  # no positive r: equal weights
    assert EnsembleRecipe("top-k-average", ("a", "b", "c"), k=2).model == "ensemble:top-k-average:k2-cv5"


def test_the_ensemble_command_adds_the_model_and_prints_its_gain(planted, tmp_path, capsys):
    results_path = tmp_path / "results.nc"
    planted.results.to_netcdf(results_path, engine="scipy")
    args = ["ensemble", str(results_path), "--method", "best-per-roi", "--n-boot", "50", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ensemble:best-per-roi:streams-cv5 against the best single model planted:" in out
    assert "gain +" in out and "paired bootstrap" in out  # the planted truth: one space misses half the vertices
    saved = load_results(results_path)
    assert "ensemble:best-per-roi:streams-cv5" in saved["model"].values
    assert (tmp_path / "leaderboard.csv").read_text().count("ensemble:best-per-roi") == 1
    assert len(list((tmp_path / "ensembles").glob("*.nc"))) == len(MEMBERS) * 2  # the resumable part
    assert (
        main(
            [
                "submit",
                "--results",
                str(results_path),
                "--model",
                "ensemble:best-per-roi",
                "--out",
                str(tmp_path / "submission"),
            ]
        )
        == 0
    )
    assert "submission:" in capsys.readouterr().out


def test_a_rerun_of_the_grid_keeps_ensembles_whose_members_are_unchanged(planted, ensembles, tmp_path, capsys):
    import shutil

    out = Path(shutil.copytree(planted.root / "results", tmp_path / "results"))
    ensembles.to_netcdf(out / "results.nc", engine="scipy")
    grown = fit_grid(
        planted.store,
        planted.data,
        models=[*MEMBERS, f"{BACKBONE}:s2+{BACKBONE}:s1"],
        settings=[SETTING],
        out=out,
        **FAST,
    )
    assert f"{BACKBONE}:s2+{BACKBONE}:s1:{LABEL}" in grown["model"].values  # a new fit, so results were rebuilt
    for model in json.loads(ensembles.attrs["ensembles"]):
        xr.testing.assert_identical(grown["r"].sel(model=model), ensembles["r"].sel(model=model))
    xr.testing.assert_identical(grown["ensemble_weight"], ensembles["ensemble_weight"])
    assert fit_ensemble(grown, "best-per-vertex", cache_dir=out / "ensembles", progress=False)["model"].size == 7
    fewer = fit_grid(planted.store, planted.data, models=MEMBERS, subjects=[1], settings=[SETTING], out=out, **FAST)
    assert "ensemble_weight" not in fewer and not [m for m in fewer["model"].values if m.startswith("ensemble")]
    assert "ensemble:best-per-roi:streams-cv5: dropped (members refitted or missing)" in capsys.readouterr().out


def test_the_report_shows_ensembles_and_multi_space_models_with_their_recipes(ensembles, tmp_path):
    from encoders.demo import _model_provenance
    from encoders.report import write_report

    provenance = _model_provenance(ensembles)
    assert provenance["ensemble:top-k-average:k2-cv5"]["encoder"]["members"] == MEMBERS_IDS
    assert provenance[MEMBERS_IDS[2]]["encoder"]["pca"] is None
    page = write_report(leaderboard(ensembles), [], provenance, tmp_path / "report.html").read_text()
    assert page.count("ensemble:best-per-roi:streams-cv5") == 2  # leaderboard row and provenance heading
    assert f"{MEMBERS_IDS[2]}</th>" in page


def test_the_layer_roi_heatmap_has_a_row_per_ensemble_after_the_layers(ensembles):
    from encoders.figures import _layer_heatmap_table

    table = leaderboard(ensembles, ceiling=False)
    frame = _layer_heatmap_table(ensembles, table)
    assert frame.index.tolist() == [
        (BACKBONE, "s1"),
        (BACKBONE, "s2"),
        (BACKBONE, "s1+s2"),
        ("ensemble", "best-per-roi:streams-cv5"),
        ("ensemble", "best-per-vertex:cv5"),
        ("ensemble", "top-k-average:k2-cv5"),
    ]
    assert frame.loc[("ensemble", "best-per-vertex:cv5"), "early"] == table.loc["ensemble:best-per-vertex:cv5", "early"]
