"""The ``featurestore`` command line, run in-process through ``main`` on real photos and the demo dataset."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torchvision

from featurestore.backbones._base import sha256_file
from featurestore.cli import main
from featurestore.store import open_features

BACKBONE = "alexnet.tiny"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``featurestore argv...``."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_help_reads_like_the_readme(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    for command in ("extract", "layers", "ls", "info", "demo-data"):
        assert re.search(rf"^\s+{command}\s", text, re.MULTILINE)
    assert "featurestore.open_features" in text and "featurestore extract --backbone alexnet" in text
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    assert "--dry-run" in capsys.readouterr().out


def test_layers_marks_inplace_and_default_layers(capsys, tiny_catalog) -> None:
    status, out, _ = run(capsys, "layers", BACKBONE, "--catalog", *tiny_catalog)
    lines = {line[2:].split()[0]: line for line in out.splitlines()[1:]}
    features = torchvision.models.alexnet().features
    inplace_relu_after = {
        f"features.{i}" for i in range(len(features) - 1) if getattr(features[i + 1], "inplace", False)
    }
    assert status == 0 and inplace_relu_after == {"features.0", "features.3", "features.6", "features.8", "features.10"}
    for name in inplace_relu_after:
        assert lines[name].endswith("inplace")
    assert lines["features.2"].startswith("* ") and "(64, 7, 7)" in lines["features.2"]
    assert "reduce=avgpool" in lines["features.5"] and not lines["features.1"].startswith("*")


def test_extract_ls_info_round_trip(capsys, tmp_path, algonauts_dir, tiny_catalog, untrained_weights) -> None:
    store = tmp_path / "features.zarr"
    common = [
        "--backbone",
        BACKBONE,
        "--images",
        algonauts_dir,
        "--store",
        store,
        "--catalog",
        *tiny_catalog,
        "--chunk-rows",
        "4",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--subjects",
        "2",
        "--device",
        "cpu",
    ]
    status, out, _ = run(capsys, "extract", *common, "--dry-run")
    assert status == 0 and not store.exists()
    assert "5 new ids" in out and "uncompressed upper bound" in out
    status, out, _ = run(capsys, "extract", *common, "--layers", "features.2", "classifier.5")
    assert status == 0 and "5 images through the model, 2 chunk(s) written" in out
    np.testing.assert_array_equal(open_features(store, BACKBONE, "features.2").nsd_id, [7, 845, 5001, 40000, 61000])
    status, out, _ = run(capsys, "ls", store)
    table = [line.split() for line in out.splitlines()]
    assert status == 0 and table[0][:3] == ["backbone", "layer", "n_ids"]
    assert [row[:3] for row in table[1:]] == [[BACKBONE, "classifier.5", "5"], [BACKBONE, "features.2", "5"]]
    status, out, _ = run(capsys, "info", store, BACKBONE)
    provenance = json.loads(out)
    assert provenance["weights"]["sha256"] == sha256_file(untrained_weights["alexnet"])
    assert provenance["chunk_rows"] == 4 and provenance["entry"]["name"] == BACKBONE


def test_user_errors_are_one_line(capsys, tmp_path, algonauts_dir, tiny_catalog) -> None:
    status, _, err = run(
        capsys,
        "extract",
        "--backbone",
        "alexnet.tinny",
        "--images",
        algonauts_dir,
        "--store",
        tmp_path / "s.zarr",
        "--catalog",
        *tiny_catalog,
    )
    assert status == 1 and err.startswith("featurestore: error: unknown backbone 'alexnet.tinny'")
    assert "alexnet.tiny" in err and len(err.strip().splitlines()) == 1
    status, _, err = run(capsys, "ls", tmp_path / "missing.zarr")
    assert status == 1 and "No feature store at" in err


def test_demo_data_feeds_extract(capsys, tmp_path, tiny_catalog) -> None:
    status, out, _ = run(
        capsys, "demo-data", tmp_path / "demo", "--n-train", "6", "--n-test", "2", "--n-vertices", "40"
    )
    assert status == 0 and "Algonauts 2023 layout" in out
    names = [path.name for path in (tmp_path / "demo").rglob("*_nsd-*.png")]
    ids = {int(re.search(r"_nsd-(\d{5})\.png$", name).group(1)) for name in names}
    assert len(names) == 16 and len(ids) < len(names)  # two subjects sharing images
    status, out, _ = run(
        capsys,
        "extract",
        "--backbone",
        BACKBONE,
        "--images",
        tmp_path / "demo",
        "--store",
        tmp_path / "s.zarr",
        "--catalog",
        *tiny_catalog,
        "--dry-run",
    )
    assert status == 0 and f"{len(ids)} new ids" in out


def test_debug_flag_shows_the_traceback_and_bad_storage_option_is_a_usage_error(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NSD_FEATURESTORE_DEBUG", raising=False)
    with pytest.raises(FileNotFoundError, match="No feature store at"):
        main(["ls", str(tmp_path / "missing.zarr"), "--debug"])
    with pytest.raises(FileNotFoundError):
        main(["--debug", "info", str(tmp_path / "missing.zarr"), BACKBONE])
    with pytest.raises(SystemExit) as exit_:
        main(["ls", str(tmp_path), "--storage-option", "no-equals-sign"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --storage-option: expected KEY=VALUE, got 'no-equals-sign'" in err
