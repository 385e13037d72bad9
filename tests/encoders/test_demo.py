"""The demo end to end at the tiny size (real untrained backbones), its rerun, and the CLI on its outputs."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from encoders.cli import main
from encoders.demo import DEMO_BACKBONES
from encoders.grid import load_results
from encoders.submission import check_submission


@pytest.fixture
def demo(tiny_demo):
    return tiny_demo


def test_outputs(demo):
    outputs, out = demo
    results = load_results(outputs.results)
    models = results["model"].values.tolist()
    assert {m.split(":")[0] for m in models} == set(DEMO_BACKBONES)
    assert len(models) == 3 and list(results["subject"].values) == [1, 2]
    table = pd.read_csv(outputs.leaderboard_csv, index_col="model")
    assert set(models) <= set(table.index) and "noise ceiling (max r)" in table.index
    assert table.loc[models, "All vertices"].notna().all()
    assert set(pd.read_csv(outputs.best_layers_csv)["backbone"]) == set(DEMO_BACKBONES)
    report = outputs.report.read_text()
    for model in models:
        assert model in report
    names = {path.name for path in outputs.figures}
    assert {
        "accuracy_lh.png",
        "accuracy_rh.png",
        "accuracy.html",
        "roi_medians.png",
        "layer_roi_heatmap.png",
        "image_response.png",
    } <= names
    for path in outputs.figures:
        assert path.is_file() and path.stat().st_size > 1000 and path.is_relative_to(out)
    assert check_submission(outputs.submission, outputs.data) == []


def test_leaderboard_ceiling_and_test_score_follow_the_planted_truth(demo):
    """The ceiling row is the simulation's ceiling; the printed test score is the official formula on the
    submission's files, recomputed here with scipy from the files alone."""
    outputs, _ = demo
    truth = json.loads((outputs.data / "demo_truth.json").read_text())["subjects"]
    table = pd.read_csv(outputs.leaderboard_csv, index_col="model")
    planted = np.mean([np.sqrt(truth[s][h]["median_noise_ceiling"]) for s in truth for h in ("lh", "rh")])
    assert table.loc["noise ceiling (max r)", "All vertices"] == pytest.approx(planted, rel=0.02)
    scores, n = 0.0, 0
    with zipfile.ZipFile(outputs.submission) as archive:
        for subject in truth:
            for hemi in ("lh", "rh"):
                prediction = np.load(io.BytesIO(archive.read(f"{subject}/{hemi}_pred_test.npy")))
                split = outputs.data / subject / "test_split"
                test_fmri = np.load(split / "test_fmri" / f"{hemi}_test_fmri.npy")
                nc = np.load(split / "noise_ceiling" / f"{hemi}_noise_ceiling.npy").astype(np.float64)
                r = np.array([stats.pearsonr(test_fmri[:, v], prediction[:, v])[0] for v in range(nc.size)])
                scores += np.minimum(100 * np.clip(r, 0, None) ** 2 / nc, 100).sum()
                n += nc.size
    assert outputs.test_score == pytest.approx(scores / n, rel=1e-5)
    assert 0 < outputs.test_score < 100


def test_rerun_reuses_store_and_fits(demo, capsys):
    outputs, out = demo
    assert main(["demo", "--out", str(out), "--size", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("0 images computed") == 2
    assert printed.count("pca10-ridge-cv5 subj0") == printed.count("(reused)") - 2 == 6
    assert "figures and HTML report\n   up to date with the results (reused)" in printed
    assert "up to date with the results and checked (reused)" in printed
    assert str(outputs.submission) in printed and str(outputs.report) in printed


def test_cli_on_demo_results(demo, tmp_path, capsys):
    outputs, _ = demo
    assert (
        main(
            [
                "fit",
                "--store",
                str(outputs.store),
                "--data",
                str(outputs.data),
                "--backbones",
                "alexnet.untrained",
                "--layers",
                "features.5",
                "--pca",
                "5",
                "--cv",
                "loo",
                "--subjects",
                "2",
                "--n-boot",
                "20",
                "--out",
                str(tmp_path / "fit"),
                "--quiet",
            ]
        )
        == 0
    )
    fitted = load_results(tmp_path / "fit")
    assert fitted["model"].values.tolist() == ["alexnet.untrained:features.5:pca5-ridge-loo"]
    assert (tmp_path / "fit" / "leaderboard.csv").is_file() and (tmp_path / "fit" / "best_layers.csv").is_file()
    assert main(["leaderboard", str(outputs.results), "--csv", str(tmp_path / "board.csv"), "--rois", "V1v"]) == 0
    assert "V1v" in capsys.readouterr().out and (tmp_path / "board.csv").is_file()
    assert (
        main(
            [
                "compare",
                str(outputs.results),
                "alexnet.untrained:features.5",
                "alexnet.untrained:classifier.5",
                "--n-boot",
                "50",
            ]
        )
        == 0
    )
    assert "p (B <= A)" in capsys.readouterr().out
    assert (
        main(
            [
                "submit",
                "--results",
                str(outputs.results),
                "--model",
                "ViT-B-32.untrained:embedding",
                "--out",
                str(tmp_path / "sub"),
            ]
        )
        == 0
    )
    assert check_submission(tmp_path / "sub" / "algonauts_2023_submission.zip", outputs.data) == []
