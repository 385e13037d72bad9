"""The `encoders` command: help texts, argument translation, exit codes of check-submission and of errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest

from encoders.cli import _build_parser, _settings, main
from encoders.submission import expected_shapes, write_submission

SUBCOMMANDS = ["fit", "leaderboard", "partition", "compare", "ensemble", "submit", "check-submission", "plots", "demo"]


def test_installed_command_help_reads_like_the_readme():
    done = subprocess.run([sys.executable, "-m", "encoders.cli", "--help"], capture_output=True, text=True, check=True)
    assert "encoders demo --out demo_output" in done.stdout
    assert "featurestore extract --backbone alexnet" in done.stdout
    for command in SUBCOMMANDS:
        assert command in done.stdout


@pytest.mark.parametrize(
    "command, phrase",
    [
        ("fit", "reused when the command is run again with the same recipe and the same data"),
        ("leaderboard", "bootstrap intervals"),
        ("partition", "joint R2 minus the R2 of the model refitted without that space"),
        ("compare", "same bootstrap resamples"),
        ("ensemble", "validation rows, which took no part in the choice"),
        ("submit", "algonauts_2023_submission.zip"),
        ("check-submission", "exit status 1"),
        ("plots", "interactive HTML"),
        ("demo", "reuses everything"),
    ],
)
def test_subcommand_help(command, phrase, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert phrase in " ".join(capsys.readouterr().out.split())


def test_fit_options_become_settings():
    args = _build_parser().parse_args(
        [
            "fit",
            "--store",
            "s.zarr",
            "--data",
            "d",
            "--models",
            "a:l1,a:l2",
            "a:l1+b:l3",
            "--pca",
            "100",
            "none",
            "--ridge",
            "kernel",
            "--alphas",
            "1,10",
            "--cv",
            "gcv",
            "--subjects",
            "1",
            "2",
        ]
    )
    assert _settings(args) == [
        dict(pca=100, ridge="kernel", alphas=[1.0, 10.0], cv="gcv", join="concat"),
        dict(pca=None, ridge="kernel", alphas=[1.0, 10.0], cv="gcv", join="concat"),
    ]
    assert args.models == [["a:l1", "a:l2"], ["a:l1+b:l3"]] and args.subjects == [["1"], ["2"]]
    banded = _build_parser().parse_args(["fit", "--store", "s", "--data", "d", "--join", "concat", "banded"])
    assert [(s["join"], s.get("ratios")) for s in _settings(banded)] == [("concat", None), ("banded", 10)]


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--pca", "-3", "--pca must be >= 1"),
        ("--cv", "five", "--cv takes a number of folds, 'loo' or 'gcv'"),
        ("--alphas", "1,x", "--alphas takes comma-separated numbers"),
    ],
)
def test_bad_option_values(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--store", "s", "--data", "d", option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _predictions(data_dir, dtype=np.float32):
    return {
        subject: {hemi: np.zeros(shape, dtype=dtype) for hemi, shape in hemis.items()}
        for subject, hemis in expected_shapes(data_dir).items()
    }


def test_check_submission_ok(algonauts_dir, tmp_path, capsys):
    archive = write_submission(_predictions(algonauts_dir), tmp_path, algonauts_dir)
    assert main(["check-submission", str(archive), "--data", str(algonauts_dir)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_submission_failure_exit_code_and_problems(algonauts_dir, tmp_path, capsys):
    good = write_submission(_predictions(algonauts_dir), tmp_path / "good", algonauts_dir)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        for name in source.namelist():
            if name.startswith("subj01/"):
                target.writestr(f"submission/{name}", source.read(name))  # an extra parent folder
    assert main(["check-submission", str(bad), "--data", str(algonauts_dir)]) == 1
    err = capsys.readouterr().err
    assert "problem(s)" in err and "subj02" in err and "parent folder" in err


def test_errors_exit_1_with_a_message(tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "missing.nc")]) == 1
    assert "No results file" in capsys.readouterr().err
    assert main(["submit", "--model", "alexnet:features.5", "--out", str(tmp_path)]) == 1
    assert "--model BACKBONE:LAYER with --store and --data" in capsys.readouterr().err


def test_the_old_solver_option_still_works_and_says_its_new_name(capsys):
    args = _build_parser().parse_args(["fit", "--store", "s", "--data", "d", "--solver", "kernel"])
    assert _settings(args)[0]["ridge"] == "kernel"
    assert "--solver is now --ridge" in capsys.readouterr().err
    assert _settings(_build_parser().parse_args(["fit", "--store", "s", "--data", "d"]))[0]["ridge"] == "primal"
