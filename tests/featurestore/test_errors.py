"""The user-error family: every user-facing error is a FeatureStoreError that keeps its builtin base, and
``run_command`` turns them into one line and exit status 1 (Ctrl-C: 130), while bugs keep their traceback."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from featurestore.backbones import WeightsError
from featurestore.catalog import CatalogError
from featurestore.errors import FeatureStoreError, InvalidParameterError, MissingEntryError, run_command
from featurestore.extract import NonFiniteFeaturesError, extract
from featurestore.stimuli import StimulusError
from featurestore.store import ProvenanceError, StoreLockedError, open_features

BACKBONE = "alexnet.tiny"


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (CatalogError, ValueError),
        (NonFiniteFeaturesError, ValueError),
        (StoreLockedError, RuntimeError),
        (ProvenanceError, ValueError),
        (WeightsError, RuntimeError),
        (StimulusError, ValueError),
        (MissingEntryError, KeyError),
        (InvalidParameterError, ValueError),
        (InvalidParameterError, TypeError),
    ],
)
def test_user_errors_share_one_base_and_keep_their_builtin_one(error, builtin) -> None:
    assert issubclass(error, FeatureStoreError) and issubclass(error, builtin)


def test_missing_entry_reads_as_a_sentence() -> None:
    error = MissingEntryError("No layer 'x' stored; stored: ['a']")
    assert str(error) == "No layer 'x' stored; stored: ['a']"


def test_errors_module_imports_nothing_heavy() -> None:
    code = (
        "import sys\nfor name in ('torch', 'torchvision', 'PIL', 'h5py', 'open_clip'):\n"
        "    sys.modules[name] = None\nimport featurestore.errors\n"
        "print(sorted(m for m in ('torch', 'PIL', 'h5py') if sys.modules.get(m)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _raise(error: BaseException):
    def command() -> None:
        raise error

    return command


def test_run_command_prints_one_line_per_user_error(capsys, monkeypatch) -> None:
    monkeypatch.delenv("NSD_FEATURESTORE_DEBUG", raising=False)
    assert run_command("prog", (FeatureStoreError,), lambda: None) == 0
    status = run_command(
        "prog",
        (FeatureStoreError, FileNotFoundError),
        _raise(MissingEntryError("No backbone 'b' in store /s;\nstored: []")),
    )
    assert status == 1 and capsys.readouterr().err == "prog: error: No backbone 'b' in store /s; stored: []\n"
    assert run_command("prog", (FileNotFoundError,), _raise(FileNotFoundError(2, "No such file", "/x"))) == 1
    assert capsys.readouterr().err == "prog: error: [Errno 2] No such file: '/x'\n"
    assert run_command("prog", (), _raise(KeyboardInterrupt()), interrupted="stopped; rerun to resume") == 130
    assert capsys.readouterr().err == "prog: stopped; rerun to resume\n"


def test_run_command_returns_the_command_status_and_prints_warnings_as_one_line(capsys, monkeypatch) -> None:
    monkeypatch.delenv("NSD_FEATURESTORE_DEBUG", raising=False)

    def command() -> int:
        warnings.warn("only 3 images:\nno interval", RuntimeWarning, stacklevel=2)
        return 3

    assert run_command("prog", (), command) == 3
    assert capsys.readouterr().err == "prog: warning: only 3 images: no interval\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_command("prog", (), command, debug=True) == 3  # Python's own format, file and line
    assert [str(w.message) for w in caught] == ["only 3 images:\nno interval"]


def test_run_command_keeps_the_traceback_of_bugs_and_in_debug_mode(capsys, monkeypatch) -> None:
    monkeypatch.delenv("NSD_FEATURESTORE_DEBUG", raising=False)
    with pytest.raises(ZeroDivisionError):
        run_command("prog", (FeatureStoreError,), lambda: 1 / 0)
    with pytest.raises(CatalogError):
        run_command("prog", (FeatureStoreError,), _raise(CatalogError("bad")), debug=True)
    monkeypatch.setenv("NSD_FEATURESTORE_DEBUG", "1")
    with pytest.raises(KeyboardInterrupt):
        run_command("prog", (FeatureStoreError,), _raise(KeyboardInterrupt()))
    assert capsys.readouterr().err == ""


def test_open_features_names_a_non_str_argument(tmp_path) -> None:
    from featurestore.store import open_store

    open_store(tmp_path / "s.zarr", "a")
    with pytest.raises(InvalidParameterError, match=r"^backbone must be a backbone group name \(str\); got int 1$"):
        open_features(tmp_path / "s.zarr", 1, "features.2")
    with pytest.raises(TypeError, match=r"^layer must be a layer name \(str\); got int 2$"):
        open_features(tmp_path / "s.zarr", BACKBONE, 2)


def test_extract_refuses_a_str_of_layers(tmp_path, algonauts_dir, tiny_catalog) -> None:
    with pytest.raises(InvalidParameterError, match=r"layers must be a list of layer names .* got str 'features.12'"):
        extract(BACKBONE, algonauts_dir, tmp_path / "s.zarr", layers="features.12", catalog=tiny_catalog)
    with pytest.raises(InvalidParameterError, match=r"backbone must be a catalog name .* got int 3"):
        extract(3, algonauts_dir, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()
