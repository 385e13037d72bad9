"""Write, check and read Algonauts 2023 submissions: a zip (or folder) of ``subjXX/{lh,rh}_pred_test.npy``.

Each file holds float32 predictions of shape (n_test_images, n_challenge_vertices) with rows in test image
file order (``test-0001_...`` first) and columns in challenge vertex order. Expected shapes come from the
data folder: the test image count of each subject and the all-vertices mask of each hemisphere.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

import numpy as np

from encoders.challenge import RoiAtlas, list_images, list_subjects
from encoders.errors import SubmissionError
from nsd.layout import HEMISPHERES, PREDICTION_FILE, SUBJECT_FOLDER, subject_number


def expected_shapes(
    data_dir: str | Path, subjects: Iterable[int | str] | None = None
) -> dict[int, dict[str, tuple[int, int]]]:
    """subject -> hemisphere -> (n_test_images, n_challenge_vertices), read from the data folder."""
    numbers = list_subjects(data_dir) if subjects is None else [subject_number(s) for s in subjects]
    shapes = {}
    for subject in numbers:
        n_test = len(list_images(data_dir, subject, "test")[0])
        atlas = RoiAtlas(data_dir, subject)
        shapes[subject] = {hemi: (n_test, atlas.n_vertices(hemi)) for hemi in HEMISPHERES}
    return shapes


def _array_problems(label: str, array: np.ndarray, expected: tuple[int, int]) -> list[str]:
    """Dtype, shape and finiteness problems of one prediction array."""
    problems = []
    if array.dtype != np.float32:
        problems.append(f"{label}: dtype {array.dtype}, expected float32 (cast with .astype(np.float32))")
    if array.shape != expected:
        problems.append(
            f"{label}: shape {array.shape}, expected {expected} ({expected[0]} test images x {expected[1]} vertices)"
        )
    if array.dtype.kind in "fc":
        n_nan = int(np.isnan(array).sum())
        n_inf = int(np.isinf(array).sum())
        if n_nan or n_inf:
            problems.append(f"{label}: {n_nan} NaN and {n_inf} inf values; predictions must be finite")
    return problems


def _prediction_problems(
    predictions: Mapping[int | str, Mapping[str, np.ndarray]], shapes: Mapping[int, Mapping[str, tuple[int, int]]]
) -> tuple[dict[int, dict[str, np.ndarray]], list[str]]:
    """Normalise subject keys to ints and list every problem against ``shapes``."""
    problems: list[str] = []
    by_subject: dict[int, dict[str, np.ndarray]] = {}
    keys: dict[int, int | str] = {}
    for key, hemis in predictions.items():
        subject = subject_number(key)
        if subject in keys:
            problems.append(f"subj{subject:02d}: given twice (keys {keys[subject]!r} and {key!r})")
        keys[subject] = key
        by_subject[subject] = {hemi: np.asarray(array) for hemi, array in hemis.items()}
    for subject in sorted(set(by_subject) - set(shapes)):
        problems.append(f"subj{subject:02d}: predictions given but expected only subjects {sorted(shapes)}")
    for subject, hemi_shapes in shapes.items():
        if subject not in by_subject:
            problems.append(f"subj{subject:02d}: missing (no predictions for this subject)")
            continue
        given = by_subject[subject]
        for hemi in sorted(set(given) - set(HEMISPHERES)):
            problems.append(f"subj{subject:02d}: unexpected key {hemi!r}; expected {list(HEMISPHERES)}")
        for hemi, shape in hemi_shapes.items():
            if hemi not in given:
                problems.append(f"subj{subject:02d} {hemi}: missing; expected an array of shape {shape}")
            else:
                problems += _array_problems(f"subj{subject:02d} {hemi}", given[hemi], shape)
    return by_subject, problems


def write_submission(
    predictions: Mapping[int | str, Mapping[str, np.ndarray]],
    out_dir: str | Path,
    data_dir: str | Path,
    subjects: Iterable[int | str] | None = None,
    *,
    zip_name: str = "algonauts_2023_submission.zip",
) -> Path:
    """Check ``predictions`` then write ``out_dir/subjXX/{lh,rh}_pred_test.npy`` and a zip of them.

    ``subjects=None`` expects every subject of ``data_dir``. Nothing is written (not even ``out_dir``)
    when any prediction is missing, has the wrong shape, is not float32 or holds NaN/inf; the
    ``SubmissionError`` lists every problem. Returns the zip path; its top level holds the subject folders.
    """
    by_subject, problems = _prediction_problems(predictions, expected_shapes(data_dir, subjects))
    if problems:
        raise SubmissionError("Submission not written:\n  " + "\n  ".join(problems))
    out_dir = Path(out_dir)
    zip_path = out_dir / zip_name
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for subject, hemis in sorted(by_subject.items()):
            folder = out_dir / f"subj{subject:02d}"
            folder.mkdir(exist_ok=True)
            for hemi in HEMISPHERES:
                path = folder / PREDICTION_FILE.format(hemi=hemi)
                np.save(path, hemis[hemi])
                archive.write(path, arcname=f"{folder.name}/{path.name}")
    return zip_path


NPY_MAGIC = b"\x93NUMPY"


def _load_npy_bytes(data: bytes) -> np.ndarray:
    """A .npy array from bytes, without pickles; ValueError saying what the bytes are when they are not one."""
    if not data.startswith(NPY_MAGIC):
        raise ValueError(f"no .npy header (the file starts with {data[:8]!r}, a .npy file with {NPY_MAGIC!r})")
    return np.load(io.BytesIO(data), allow_pickle=False)


@contextlib.contextmanager
def _members(path: Path) -> Iterator[tuple[list[str], Callable[[str], bytes]]]:
    """(file names, reader of a name's bytes) of a submission zip or folder.

    In a folder only files under ``subjXX`` folders count: the zip that `write_submission` puts beside them,
    or any other file there, is not part of the submission.
    """
    if path.is_dir():
        names = sorted(
            file.relative_to(path).as_posix()
            for file in path.rglob("*")
            if file.is_file() and any(SUBJECT_FOLDER.fullmatch(part) for part in file.relative_to(path).parts[:-1])
        )
        yield names, lambda name: (path / name).read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            yield [name for name in archive.namelist() if not name.endswith("/")], archive.read
    else:
        raise SubmissionError(
            f"{path}: {'not a zip archive' if path.exists() else 'does not exist'}; expected a submission zip or a "
            "folder holding subjXX/{lh,rh}_pred_test.npy"
        )


def _inspect(
    path: Path, shapes: Mapping[int, Mapping[str, tuple[int, int]]]
) -> tuple[dict[int, dict[str, np.ndarray]], list[str]]:
    """Arrays found in a submission zip or folder, and every problem with its layout and contents."""
    expected_names = {PREDICTION_FILE.format(hemi=hemi): hemi for hemi in HEMISPHERES}
    problems: list[str] = []
    found: dict[tuple[int, str], str] = {}
    parents: set[str] = set()
    arrays: dict[int, dict[str, np.ndarray]] = {}
    with _members(path) as (names, read):
        for name in names:
            parts = PurePosixPath(name).parts
            at = next((i for i, part in enumerate(parts) if SUBJECT_FOLDER.fullmatch(part)), None)
            if at is None or len(parts) != at + 2 or parts[-1] not in expected_names:
                problems.append(f"{name}: unexpected file; expected only subjXX/{{lh,rh}}_pred_test.npy")
                continue
            if at:
                parents.add("/".join(parts[:at]) + "/")
            subject = subject_number(parts[at])
            if subject not in shapes:
                problems.append(f"{name}: unexpected subject; expected subjects {sorted(shapes)}")
                continue
            key = (subject, expected_names[parts[-1]])
            if key in found:
                problems.append(f"{name}: duplicate of {found[key]}")
                continue
            found[key] = name
        problems += [
            f"extra parent folder {parent!r} in the archive; subject folders must be at the top level"
            for parent in sorted(parents)
        ]
        for subject, hemi_shapes in shapes.items():
            for hemi, shape in hemi_shapes.items():
                label = f"subj{subject:02d}/{PREDICTION_FILE.format(hemi=hemi)}"
                if (subject, hemi) not in found:
                    problems.append(f"{label}: missing from the submission")
                    continue
                try:
                    array = _load_npy_bytes(read(found[(subject, hemi)]))
                except ValueError as error:
                    problems.append(f"{label}: not a readable .npy array ({error})")
                    continue
                problems += _array_problems(label, array, shape)
                arrays.setdefault(subject, {})[hemi] = array
    return arrays, problems


def check_submission(
    submission: str | Path, data_dir: str | Path, subjects: Iterable[int | str] | None = None
) -> list[str]:
    """Every problem of a submission zip or folder (empty list: ready to upload).

    Names missing subjects or files, wrong dtype or shape, NaN/inf, files that are not .npy arrays, an extra
    parent folder above the subject folders, and unexpected files. ``subjects=None`` expects every subject of
    ``data_dir``.
    """
    try:
        return _inspect(Path(submission), expected_shapes(data_dir, subjects))[1]
    except SubmissionError as error:
        return [str(error)]


def read_submission(
    submission: str | Path, data_dir: str | Path, subjects: Iterable[int | str] | None = None
) -> dict[int, dict[str, np.ndarray]]:
    """The predictions of a submission zip or folder, ``{subject: {"lh": array, "rh": array}}``, after the checks
    of `check_submission`; ``SubmissionError`` listing every problem otherwise."""
    arrays, problems = _inspect(Path(submission), expected_shapes(data_dir, subjects))
    if problems:
        raise SubmissionError(f"Submission {submission} cannot be scored:\n  " + "\n  ".join(problems))
    return arrays
