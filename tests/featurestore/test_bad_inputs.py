"""Red team: the ``featurestore`` command on bad inputs. Each case exits with status 1 (130 for Ctrl-C), prints
exactly one line on stderr that names the culprit, no traceback, and leaves the store as it was."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from featurestore.cli import main
from featurestore.store import open_store

from .conftest import SMALL_STORE_BACKBONE as BACKBONE
from .conftest import SMALL_STORE_LAYERS, TINY_PREPROCESSING

FAST = ["--chunk-rows", "4", "--batch-size", "2", "--no-progress", "--device", "cpu"]


def snapshot(store: Path) -> dict[str, bytes]:
    """Every file of a local store by relative path (lock files included)."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def one_line(err: str, *names: object) -> str:
    """Assert ``err`` is one ``featurestore: ...`` line without a traceback that contains every name; return it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featurestore: ") and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    """In-process ``featurestore argv...``: exit status and stderr."""
    status = main([str(arg) for arg in argv])
    return status, capsys.readouterr().err


def cli_process(*argv: object, code: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m featurestore.cli argv...`` (or ``code`` then ``main``) in a fresh interpreter."""
    prefix = (
        [sys.executable, "-c", code + "\nfrom featurestore.cli import main\nsys.exit(main(sys.argv[1:]))"]
        if code
        else [sys.executable, "-m", "featurestore.cli"]
    )
    return subprocess.run([*prefix, *map(str, argv)], capture_output=True, text=True, timeout=300)


def extract_args(images: Path, store: Path, catalog: list[Path], *more: object) -> list[object]:
    """The arguments of a small ``featurestore extract`` run."""
    return [
        "extract",
        "--backbone",
        BACKBONE,
        "--images",
        images,
        "--store",
        store,
        "--catalog",
        *catalog,
        *FAST,
        *more,
    ]


def test_store_path_is_a_regular_file(tmp_path, algonauts_dir, tiny_catalog) -> None:
    afile = tmp_path / "features.zarr"
    afile.write_text("my notes")
    done = cli_process(*extract_args(algonauts_dir, afile, tiny_catalog, "--workers", "0"))
    assert done.returncode == 1
    one_line(done.stderr, afile, "is a file, not a folder")
    for argv in (["ls", afile], ["info", afile, BACKBONE]):
        done = cli_process(*argv)
        assert done.returncode == 1
        one_line(done.stderr, afile, "is a file")
    assert afile.read_text() == "my notes"


def test_read_only_store(small_store, algonauts_dir, tiny_catalog) -> None:
    before = snapshot(small_store)
    # run as root, chmod -R a-w would not stop the writer: the child sees every path as not writable instead
    done = cli_process(
        *extract_args(algonauts_dir, small_store, tiny_catalog, "--workers", "0"),
        code="import os, sys\nos.access = lambda path, mode: False",
    )
    assert done.returncode == 1
    line = one_line(done.stderr, small_store, "read-only")
    assert "_locks" not in line and "Errno" not in line
    assert snapshot(small_store) == before


def test_missing_store(capsys, tmp_path) -> None:
    missing = tmp_path / "nowhere.zarr"
    for argv in (["ls", missing], ["info", missing, BACKBONE]):
        status, err = cli(capsys, *argv)
        assert status == 1
        one_line(err, f"No feature store at {missing}", "featurestore extract --store")
    assert not missing.exists()


def test_corrupt_image_with_default_workers_names_the_file(tmp_path, small_store, algonauts_dir, tiny_catalog) -> None:
    data = tmp_path / "data"
    shutil.copytree(algonauts_dir, data)
    bad = data / "subj01/training_split/training_images/train-0001_nsd-00013.png"
    bad.write_bytes(b"")
    ids_before = {layer: open_store(small_store).ids(BACKBONE, layer).tolist() for layer in SMALL_STORE_LAYERS}
    done = cli_process(*extract_args(data, small_store, tiny_catalog, "--layers", *SMALL_STORE_LAYERS))
    assert done.returncode == 1
    one_line(done.stderr, bad, "the file is empty", "--skip-bad-images")
    assert {layer: open_store(small_store).ids(BACKBONE, layer).tolist() for layer in SMALL_STORE_LAYERS} == ids_before
    done = cli_process(
        *extract_args(data, small_store, tiny_catalog, "--layers", *SMALL_STORE_LAYERS, "--skip-bad-images")
    )
    assert done.returncode == 0, done.stderr
    one_line(done.stderr, "skipped NSD id 13", bad)
    assert 13 not in open_store(small_store).ids(BACKBONE, "features.2")


def test_catalog_dtype_differs_from_the_store(capsys, tmp_path, small_store, algonauts_dir, tiny_catalog) -> None:
    before = snapshot(small_store)
    float32 = tmp_path / "float32.yaml"
    float32.write_text(
        f"{BACKBONE}:\n  extends: alexnet.testfile\n  preprocessing: {json.dumps(TINY_PREPROCESSING)}\n"
        "  dtype: float32\n",
        encoding="utf-8",
    )
    status, err = cli(
        capsys,
        *extract_args(
            algonauts_dir, small_store, [*tiny_catalog, float32], "--workers", "0", "--layers", *SMALL_STORE_LAYERS
        ),
    )
    assert status == 1
    one_line(err, "store provenance differs", "dtype float16 != float32", small_store)
    assert snapshot(small_store) == before


@pytest.mark.parametrize("case", ["unknown backbone", "missing images", "unknown layer", "layers typo", "zero batch"])
def test_user_mistakes(capsys, tmp_path, small_store, algonauts_dir, tiny_catalog, case) -> None:
    before = snapshot(small_store)
    argv = extract_args(algonauts_dir, small_store, tiny_catalog, "--workers", "0")
    expected: list[object] = []
    if case == "unknown backbone":
        argv[argv.index(BACKBONE)] = "alexnett"
        expected = ["unknown backbone 'alexnett'", "alexnet"]
    elif case == "missing images":
        argv[argv.index(algonauts_dir)] = tmp_path / "no-images"
        expected = [tmp_path / "no-images"]
    elif case == "unknown layer":
        argv += ["--layers", "features.99"]
        expected = ["has no layer 'features.99'"]
    elif case == "layers typo":
        argv += ["--layers", "features2"]
        expected = ["'features2'", "features.2"]
    else:
        argv += ["--batch-size", "0"]
        expected = ["batch_size must be >= 1", "batch_size=0"]
    status, err = cli(capsys, *argv)
    assert status == 1
    one_line(err, *expected)
    assert snapshot(small_store) == before


SLOW_WRITES = textwrap.dedent("""
    import sys, time
    from featurestore.store import FeatureStore
    write_chunk = FeatureStore.write_chunk

    def slow_write_chunk(*args, **kwargs):
        write_chunk(*args, **kwargs)
        time.sleep(0.5)

    FeatureStore.write_chunk = slow_write_chunk
""")


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, algonauts_dir, tiny_catalog) -> None:
    store = tmp_path / "s.zarr"
    code = SLOW_WRITES + "\nfrom featurestore.cli import main\nsys.exit(main(sys.argv[1:]))"
    argv = [str(a) for a in extract_args(algonauts_dir, store, tiny_catalog, "--chunk-rows", "1", "--workers", "1")]
    child = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first_chunk_done = store / BACKBONE / "_done" / "features.2" / "c" / "0"
    deadline = time.monotonic() + 240
    while not first_chunk_done.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    one_line(err, "interrupted", "finished chunks are kept", "rerun the same command to resume")
    assert open_store(store).ids(BACKBONE, "features.2").size >= 1
