"""Write and check Algonauts 2023 submission zips (``subjXX/{lh,rh}_pred_test.npy`` at the archive top level).

Each file holds float32 predictions of shape (n_test_images, n_challenge_vertices) with rows in test image
file order (``test-0001_...`` first) and columns in challenge vertex order. Expected shapes come from the
data folder: the test image count of each subject and the all-vertices mask of each hemisphere.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import numpy as np

from encoders.challenge import HEMISPHERES, RoiAtlas, list_images, list_subjects, subject_number

PREDICTION_FILE = "{hemi}_pred_test.npy"
_SUBJECT_FOLDER = re.compile(r"^subj\d\d$")


class SubmissionError(ValueError):
    """Predictions do not match what the challenge expects (message lists every problem)."""


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


def _read_npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One .npy member of a zip, without pickles."""
    return np.load(io.BytesIO(archive.read(name)), allow_pickle=False)


def check_submission(
    zip_path: str | Path, data_dir: str | Path, subjects: Iterable[int | str] | None = None
) -> list[str]:
    """Every problem of a submission zip (empty list: ready to upload).

    Names missing subjects or files, wrong dtype or shape, NaN/inf, an extra parent folder above the
    subject folders, and unexpected files. ``subjects=None`` expects every subject of ``data_dir``.
    """
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        return [f"{zip_path}: not a zip archive (or missing)"]
    shapes = expected_shapes(data_dir, subjects)
    expected_names = {PREDICTION_FILE.format(hemi=hemi): hemi for hemi in HEMISPHERES}
    problems: list[str] = []
    found: dict[tuple[int, str], str] = {}
    parents: set[str] = set()
    with zipfile.ZipFile(zip_path) as archive:
        for name in archive.namelist():
            if name.endswith("/"):
                continue
            parts = PurePosixPath(name).parts
            at = next((i for i, part in enumerate(parts) if _SUBJECT_FOLDER.match(part)), None)
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
                    problems.append(f"{label}: missing from the archive")
                    continue
                try:
                    array = _read_npy(archive, found[(subject, hemi)])
                except ValueError as error:
                    problems.append(f"{label}: not a readable .npy array ({error})")
                    continue
                problems += _array_problems(label, array, shape)
    return problems
