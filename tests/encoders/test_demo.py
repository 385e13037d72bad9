"""The demo end to end at the tiny size (real untrained backbones), its rerun, and the CLI on its outputs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from encoders.cli import main
from encoders.demo import DEMO_BACKBONES, run_demo
from encoders.grid import load_results
from encoders.submission import check_submission


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    return run_demo(out, size="tiny", progress=False), out


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
    assert {"accuracy_lh.png", "accuracy_rh.png", "accuracy.html", "roi_medians.png", "layer_roi_heatmap.png",
            "image_response.png"} <= names
    for path in outputs.figures:
        assert path.is_file() and path.stat().st_size > 1000 and path.is_relative_to(out)
    assert check_submission(outputs.submission, outputs.data) == []


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
    assert main(["fit", "--store", str(outputs.store), "--data", str(outputs.data), "--backbones",
                 "alexnet.untrained", "--layers", "features.5", "--pca", "5", "--cv", "loo", "--subjects", "2",
                 "--n-boot", "20", "--out", str(tmp_path / "fit"), "--quiet"]) == 0
    fitted = load_results(tmp_path / "fit")
    assert fitted["model"].values.tolist() == ["alexnet.untrained:features.5:pca5-ridge-loo"]
    assert (tmp_path / "fit" / "leaderboard.csv").is_file() and (tmp_path / "fit" / "best_layers.csv").is_file()
    assert main(["leaderboard", str(outputs.results), "--csv", str(tmp_path / "board.csv"), "--rois", "V1v"]) == 0
    assert "V1v" in capsys.readouterr().out and (tmp_path / "board.csv").is_file()
    assert main(["compare", str(outputs.results), "alexnet.untrained:features.5", "alexnet.untrained:classifier.5",
                 "--n-boot", "50"]) == 0
    assert "p (B <= A)" in capsys.readouterr().out
    assert main(["submit", "--results", str(outputs.results), "--model", "ViT-B-32.untrained:embedding",
                 "--out", str(tmp_path / "sub")]) == 0
    assert check_submission(tmp_path / "sub" / "algonauts_2023_submission.zip", outputs.data) == []
