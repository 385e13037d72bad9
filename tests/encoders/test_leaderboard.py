"""Leaderboard arithmetic on a hand-built results Dataset; compare() against paired_bootstrap directly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import encoders.leaderboard as lb
from encoders.bootstrap import paired_bootstrap
from encoders.challenge import RoiAtlas, load_subject

MODELS = ["a:l1:s", "a:l2:s", "b:l1:s"]
ROIS = ["All vertices", "V1v", "FFA-1"]
N_BOOT = 400


@pytest.fixture
def results(algonauts_dir) -> xr.Dataset:
    """Grid-shaped results for the tiny data: ROI medians with bootstrap samples, one ROI missing somewhere."""
    rng = np.random.default_rng(0)
    n_vertices = np.array([[load_subject(algonauts_dir, s).fmri[h].shape[1] for h in ("lh", "rh")] for s in (1, 2)])
    medians = rng.uniform(0.1, 0.6, (3, 2, 2, 3))
    medians[1, :, :, 0] += 0.5  # a:l2 is best over all vertices
    medians[2, 1, 1, 2] = np.nan  # FFA-1 absent in subj02 rh
    boot = medians[..., None] + 0.05 * rng.standard_normal((3, 2, 2, 3, N_BOOT))
    ceiling = rng.uniform(0.3, 0.8, (2, 2, 3))
    ceiling[1] = np.nan  # no noise ceiling for subj02
    return xr.Dataset(
        {
            "roi_median": (("model", "subject", "hemisphere", "roi"), medians),
            "roi_median_boot": (("model", "subject", "hemisphere", "roi", "boot"), boot),
            "val_challenge_score": (("model", "subject", "hemisphere"), rng.uniform(10, 50, (3, 2, 2))),
            "n_vertices": (("subject", "hemisphere"), n_vertices),
            "roi_noise_ceiling": (("subject", "hemisphere", "roi"), ceiling),
        },
        coords={
            "model": MODELS,
            "backbone": ("model", ["a", "a", "b"]),
            "layer": ("model", ["l1", "l2", "l1"]),
            "setting": ("model", ["s", "s", "s"]),
            "subject": [1, 2],
            "hemisphere": ["lh", "rh"],
            "roi": ROIS,
        },
        attrs={"level": 0.9, "data_dir": str(algonauts_dir), "settings": json.dumps({"s": {}})},
    )


def test_values_intervals_and_order(results):
    table = lb.leaderboard(results)
    assert list(table.index) == [
        "a:l2:s",
        *sorted(["a:l1:s", "b:l1:s"], key=lambda m: -table.loc[m, "All vertices"]),
        lb.CEILING_ROW,
    ]
    for m, model in enumerate(MODELS):
        for r, roi in enumerate(ROIS):
            values = results["roi_median"].values[m, :, :, r].ravel()
            samples = results["roi_median_boot"].values[m, :, :, r].reshape(4, N_BOOT)
            keep = np.isfinite(values)
            assert table.loc[model, roi] == pytest.approx(values[keep].mean())
            low, high = np.percentile(samples[keep].mean(axis=0), [5, 95])
            assert (table.loc[model, f"{roi} low"], table.loc[model, f"{roi} high"]) == pytest.approx((low, high))
        weights = results["n_vertices"].values.ravel()
        score = results["val_challenge_score"].values[m].ravel()
        assert table.loc[model, lb.CHALLENGE_SCORE] == pytest.approx((score * weights).sum() / weights.sum())


def test_ceiling_row_averages_subjects_with_a_ceiling(results):
    table = lb.leaderboard(results)
    for r, roi in enumerate(ROIS):
        expected = results["roi_noise_ceiling"].values[0, :, r].mean()
        assert table.loc[lb.CEILING_ROW, roi] == pytest.approx(expected)
    assert lb.CEILING_ROW not in lb.leaderboard(results.drop_vars("roi_noise_ceiling")).index


def test_subsets_and_unknown_roi(results):
    lh = lb.leaderboard(results, subjects=[2], hemispheres=["lh"], rois=["V1v"], ceiling=False)
    for m, model in enumerate(MODELS):
        assert lh.loc[model, "V1v"] == pytest.approx(results["roi_median"].values[m, 1, 0, 1])
    with pytest.raises(KeyError, match="ROIs \\['PPA'\\] are not in the results"):
        lb.leaderboard(results, rois=["PPA"])


def test_best_model_and_layers(results):
    assert lb.best_model(results) == "a:l2:s"
    table = lb.leaderboard(results, ceiling=False)
    layers = lb.best_layers(results).set_index(["backbone", "roi"])
    for roi in ROIS:
        expected = table.loc[["a:l1:s", "a:l2:s"], roi].idxmax().split(":")[1]
        assert layers.loc[("a", roi), "layer"] == expected
        assert layers.loc[("b", roi), "layer"] == "l1"
    assert layers.loc[("a", "All vertices"), "median r"] == pytest.approx(table.loc["a:l2:s", "All vertices"])


def test_format_shows_interval_and_ceiling(results):
    text = lb.format_leaderboard(lb.leaderboard(results), rois=["All vertices", "V1v"])
    value = lb.leaderboard(results).loc["a:l2:s"]
    assert f"{value['All vertices']:.3f} [{value['All vertices low']:.3f}, {value['All vertices high']:.3f}]" in text
    assert lb.CEILING_ROW in text and "90% interval" in text and "FFA-1" not in text


def test_compare_is_paired_bootstrap_per_subject_and_mean(results, algonauts_dir, monkeypatch):
    """compare() refits through predict_model_validation; here that returns fixed predictions so the statistics are
    checked against paired_bootstrap itself."""
    rng = np.random.default_rng(1)
    truth, preds = {}, {}
    for subject in (1, 2):
        n = sum(load_subject(algonauts_dir, subject).fmri[h].shape[1] for h in ("lh", "rh"))
        truth[subject] = rng.standard_normal((30, n))
        preds[("a:l1:s", subject)] = truth[subject] + 2.0 * rng.standard_normal((30, n))
        preds[("a:l2:s", subject)] = truth[subject] + 1.0 * rng.standard_normal((30, n))
    calls = []

    def fake_predict_validation(res, model, subject, *, store=None, data_dir=None):
        full = next(m for m in MODELS if m == model or m.startswith(f"{model}:"))
        calls.append((full, subject))
        return truth[subject], preds[(full, subject)]

    monkeypatch.setattr(lb, "predict_model_validation", fake_predict_validation)
    result = lb.compare(results, "a:l1", "a:l2", roi="V1v", hemisphere="rh", n_boot=200, seed=3)
    assert (result.a, result.b) == ("a:l1:s", "a:l2:s")
    assert sorted(set(calls)) == [("a:l1:s", 1), ("a:l1:s", 2), ("a:l2:s", 1), ("a:l2:s", 2)]
    for subject in (1, 2):
        atlas = RoiAtlas(algonauts_dir, subject)
        mask = np.concatenate([np.zeros(atlas.n_vertices("lh"), bool), atlas.mask("rh", "V1v")])
        expected = paired_bootstrap(
            truth[subject],
            preds[("a:l1:s", subject)],
            preds[("a:l2:s", subject)],
            mask=mask,
            n_boot=200,
            seed=3 + subject,
        )
        np.testing.assert_allclose(result.per_subject[subject].difference.samples, expected.difference.samples)
        assert result.per_subject[subject].p_value == expected.p_value
    mean_diff = np.mean([result.per_subject[s].difference.samples for s in (1, 2)], axis=0)
    np.testing.assert_allclose(result.mean.difference.samples, mean_diff)
    assert result.mean.p_value == pytest.approx(np.mean(mean_diff <= 0))
    assert result.mean.difference.low > 0 and "B is better" in str(result)
    frame = result.to_frame()
    assert list(frame.index) == ["subj01", "subj02", "mean"]
    assert isinstance(frame, pd.DataFrame) and frame.loc["mean", "B - A"] == pytest.approx(
        result.mean.difference.estimate
    )
