"""Reading features needs no torch: ``featurestore ls`` / ``info`` and ``open_features`` run in a process where
torch, torchvision, open_clip, PIL and h5py cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import SMALL_STORE_BACKBONE

# importing any of these raises ModuleNotFoundError in the child
HIDE_HEAVY = textwrap.dedent("""
    import sys
    for name in ("torch", "torchvision", "open_clip", "PIL", "h5py"):
        sys.modules[name] = None
""")


def run_without_torch(code: str, *argv: object) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (after hiding the heavy packages) in a fresh interpreter; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-c", HIDE_HEAVY + code, *map(str, argv)], capture_output=True, text=True, timeout=120
    )


def cli(*argv: object) -> subprocess.CompletedProcess[str]:
    """``featurestore argv...`` without torch."""
    return run_without_torch("from featurestore.cli import main\nsys.exit(main(sys.argv[1:]))", *argv)


def test_ls_and_info_run_without_torch(small_store_master: Path) -> None:
    listed = cli("ls", small_store_master)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[:3] for line in listed.stdout.splitlines()[1:]] == [
        [SMALL_STORE_BACKBONE, "classifier.5", "5"],
        [SMALL_STORE_BACKBONE, "features.2", "5"],
    ]
    info = cli("info", small_store_master, SMALL_STORE_BACKBONE)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["chunk_rows"] == 4
    missing = cli("info", small_store_master, "vgg16")
    assert missing.returncode == 1 and missing.stderr.startswith("featurestore: error: No backbone 'vgg16'")


def test_open_features_runs_without_torch(small_store_master: Path) -> None:
    done = run_without_torch(
        textwrap.dedent("""
        import featurestore
        features = featurestore.open_features(sys.argv[1], sys.argv[2], "classifier.5")
        print(features.sizes["nsd_id"], features.sizes["feature"], features.sel(nsd_id=[845]).values.dtype)
    """),
        small_store_master,
        SMALL_STORE_BACKBONE,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "4096", "float16"]
