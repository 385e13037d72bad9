"""Read one subject of the Algonauts 2023 challenge data (fMRI, image ids, ROI masks) with checks.

The layout (folders, file names, units) is defined once, in `nsd.layout`.

Challenge vertex ``i`` of a hemisphere is the ``i``-th nonzero entry of its all-vertices fsaverage mask.

About 430 lines: the ROI atlas and the fMRI / test-split loaders share the file checks, so every message names its
file, the shape expected and the one found in the same words.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoders.errors import ChallengeDataError
from nsd.layout import (
    ALL_VERTICES_MASK,
    FSAVERAGE_N_VERTICES,
    HEMISPHERES,
    NOISE_CEILING_FILE,
    ROI_CLASSES,
    ROI_MAPPING,
    ROI_MASK,
    ROI_MASK_FOLDER,
    SPLIT_FOLDERS,
    SUBJECT_FOLDER,
    TEST_FMRI_FILE,
    TRAINING_FMRI_FILE,
    parse_image_name,
    subject_folder_name,
    subject_number,
)

ALL_VERTICES = "All vertices"
SPACES = ("challenge", "fsaverage")
_FINITE_CHECK_ROWS = 1024


def list_subjects(data_dir: str | Path) -> list[int]:
    """Subject numbers with a ``subjXX`` folder in ``data_dir``, sorted."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ChallengeDataError(f"Challenge data folder {data_dir} does not exist")
    subjects = sorted(
        int(match.group(1))
        for child in data_dir.iterdir()
        if child.is_dir() and (match := SUBJECT_FOLDER.fullmatch(child.name))
    )
    if not subjects:
        raise ChallengeDataError(f"No subjXX folders in {data_dir}; expected the Algonauts 2023 layout")
    return subjects


def subject_dir(data_dir: str | Path, subject: int | str) -> Path:
    """The ``subjXX`` folder of one subject (error lists the subjects that exist)."""
    number = subject_number(subject)
    path = Path(data_dir) / subject_folder_name(number)
    if not path.is_dir():
        raise ChallengeDataError(
            f"No folder {path} for subject {number}; subjects in {data_dir}: {list_subjects(data_dir)}"
        )
    return path


def list_images(data_dir: str | Path, subject: int | str, split: str) -> tuple[np.ndarray, list[Path]]:
    """NSD ids (int64) and paths of a subject's ``"train"`` or ``"test"`` images, in row (file) order."""
    if split not in SPLIT_FOLDERS:
        raise ChallengeDataError(f"Unknown split={split!r}; expected one of {sorted(SPLIT_FOLDERS)}")
    folder = subject_dir(data_dir, subject).joinpath(*SPLIT_FOLDERS[split])
    if not folder.is_dir():
        raise ChallengeDataError(f"Missing image folder {folder}")
    parsed = []
    for path in folder.glob("*.png"):
        try:
            prefix, row, nsd_id = parse_image_name(path.name)
        except ValueError as error:
            raise ChallengeDataError(f"{folder}: {error}") from error
        if prefix != split:
            raise ChallengeDataError(f"{path}: a '{prefix}' image in the {split} image folder")
        parsed.append((row, nsd_id, path))
    parsed.sort()
    rows = [row for row, _, _ in parsed]
    if rows != list(range(1, len(parsed) + 1)):
        missing = sorted(set(range(1, len(parsed) + 1)) - set(rows))
        raise ChallengeDataError(
            f"{folder}: image row numbers must run 1..{len(parsed)} without gaps or repeats; "
            f"missing rows {missing[:10]}, got {len(parsed)} files"
        )
    ids = np.array([nsd_id for _, nsd_id, _ in parsed], dtype=np.int64)
    return ids, [path for _, _, path in parsed]


# np.load parses the .npy header with ast.literal_eval, and CPython 3.11 before 3.11.8 can raise a spurious
# "SystemError: AST constructor recursion depth mismatch" when threads do that at once (python/cpython#106905);
# the grid loads subjects from dask's threads, so loads are serialised (fMRI is memory-mapped: only its header is read)
_NPY_LOAD_LOCK = threading.Lock()


def _load_npy(path: Path, *, mmap: bool = False, allow_pickle: bool = False) -> np.ndarray:
    """``np.load`` that names the missing or unreadable file."""
    if not path.is_file():
        raise ChallengeDataError(f"Missing file {path}")
    try:
        with _NPY_LOAD_LOCK:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=allow_pickle)
    except (ValueError, OSError) as error:
        raise ChallengeDataError(f"Cannot read {path} as .npy: {error}") from error


def _check_hemi(hemi: str) -> str:
    """Refuse anything but ``"lh"``/``"rh"``."""
    if hemi not in HEMISPHERES:
        raise ChallengeDataError(f"Unknown hemisphere={hemi!r}; expected one of {list(HEMISPHERES)}")
    return hemi


def _check_finite(array: np.ndarray, path: Path) -> None:
    """Scan ``array`` in row blocks (memory-mapped friendly) and name the first NaN/inf."""
    n_nan = n_inf = 0
    first = None
    for start in range(0, array.shape[0], _FINITE_CHECK_ROWS):
        block = np.asarray(array[start : start + _FINITE_CHECK_ROWS])
        bad = ~np.isfinite(block)
        if bad.any():
            block_nan = int(np.isnan(block).sum())
            n_nan += block_nan
            n_inf += int(bad.sum()) - block_nan
            if first is None:
                row, column = np.argwhere(bad)[0]
                first = (start + int(row), int(column))
    if first is not None:
        raise ChallengeDataError(
            f"{path}: fMRI has {n_nan} NaN and {n_inf} inf values (first at row {first[0]}, "
            f"vertex {first[1]}); all values must be finite"
        )


class RoiAtlas:
    """ROI masks of one subject, in challenge space (per-hemisphere vertex order) or fsaverage space.

    ROI names come from ``mapping_<class>.npy``. Not every ROI exists in every subject and hemisphere:
    ``roi_names`` lists only ROIs with at least one vertex, and ``mask`` of a ROI that is known (in a
    mapping) but absent on that hemisphere returns an all-False mask. Files are read on first use and
    checked then: challenge-space masks must have ``n_vertices(hemi)`` entries, fsaverage-space ones
    163,842.

    Parameters
    ----------
    data_dir : str or Path
        Algonauts 2023 data folder (holding ``subjXX``).
    subject : int or str
        Subject number or ``"subjXX"``.
    n_vertices : mapping of str to int, default=None
        Challenge vertex count per hemisphere (e.g. the fMRI column counts); the all-vertices mask must
        select exactly that many vertices. ``None`` takes the counts from the all-vertices masks.
    """

    def __init__(self, data_dir: str | Path, subject: int | str, *, n_vertices: Mapping[str, int] | None = None):
        self.subject = subject_number(subject)
        self.roi_dir = subject_dir(data_dir, subject) / ROI_MASK_FOLDER
        self._n_vertices = dict(n_vertices) if n_vertices is not None else None
        self._cache: dict[tuple, object] = {}

    def roi_classes(self) -> list[str]:
        """The six Algonauts ROI classes, or none when the folder has no ``mapping_<class>.npy`` at all (a subject
        prepared from raw NSD without ROI labels holds the all-vertices masks only)."""
        if "classes" not in self._cache:
            mappings = [self.roi_dir / ROI_MAPPING.format(roi_class=roi_class) for roi_class in ROI_CLASSES]
            self._cache["classes"] = list(ROI_CLASSES) if any(path.is_file() for path in mappings) else []
        return list(self._cache["classes"])

    def n_vertices(self, hemi: str) -> int:
        """Number of challenge vertices of a hemisphere."""
        return int(self.all_vertices(hemi).sum())

    def all_vertices(self, hemi: str) -> np.ndarray:
        """Bool (163842,) fsaverage mask of the challenge vertices of ``hemi``."""
        key = ("all", _check_hemi(hemi))
        if key not in self._cache:
            path = self.roi_dir / ALL_VERTICES_MASK.format(hemi=hemi)
            mask = _load_npy(path)
            if mask.shape != (FSAVERAGE_N_VERTICES,):
                raise ChallengeDataError(
                    f"{path}: fsaverage mask has shape {mask.shape}, expected ({FSAVERAGE_N_VERTICES},)"
                )
            mask = mask.astype(bool)
            if self._n_vertices is not None and int(mask.sum()) != self._n_vertices[hemi]:
                raise ChallengeDataError(
                    f"{path}: selects {int(mask.sum())} challenge vertices but the {hemi} fMRI has "
                    f"{self._n_vertices[hemi]} vertices (columns)"
                )
            self._cache[key] = mask
        return self._cache[key]

    def mapping(self, roi_class: str) -> dict[int, str]:
        """ROI id -> name of one class (id 0 is "Unknown", no ROI)."""
        self._check_class(roi_class)
        key = ("mapping", roi_class)
        if key not in self._cache:
            path = self.roi_dir / ROI_MAPPING.format(roi_class=roi_class)
            loaded = _load_npy(path, allow_pickle=True)
            mapping = loaded.item() if loaded.dtype == object and loaded.shape == () else None
            if not isinstance(mapping, dict):
                raise ChallengeDataError(f"{path}: expected a pickled dict {{id: ROI name}}, got {loaded!r:.80}")
            self._cache[key] = {int(roi_id): str(name) for roi_id, name in mapping.items()}
        return self._cache[key]

    def labels(self, hemi: str, roi_class: str, space: str = "challenge") -> np.ndarray:
        """Int ROI ids of one class per vertex (challenge space or fsaverage space); 0 = no ROI."""
        self._check_class(roi_class)
        _check_hemi(hemi)
        if space not in SPACES:
            raise ChallengeDataError(f"Unknown space={space!r}; expected one of {list(SPACES)}")
        key = ("labels", hemi, roi_class, space)
        if key not in self._cache:
            path = self.roi_dir / ROI_MASK.format(hemi=hemi, roi_class=roi_class, space=space)
            labels = _load_npy(path)
            expected = self.n_vertices(hemi) if space == "challenge" else FSAVERAGE_N_VERTICES
            if labels.shape != (expected,):
                what = f"{expected} {hemi} challenge vertices" if space == "challenge" else "fsaverage"
                raise ChallengeDataError(f"{path}: ROI mask has shape {labels.shape}, expected ({expected},) ({what})")
            self._cache[key] = labels.astype(np.int64)
        return self._cache[key]

    def roi_names(self, hemi: str, roi_class: str | None = None) -> list[str]:
        """ROI names with at least one challenge vertex on ``hemi`` (one class or all, in class order)."""
        classes = self.roi_classes() if roi_class is None else (roi_class,)
        names = []
        for name_class in classes:
            present = set(np.unique(self.labels(hemi, name_class)).tolist())
            names += [name for roi_id, name in sorted(self.mapping(name_class).items()) if roi_id and roi_id in present]
        return names

    def mask(self, hemi: str, name_or_class: str, space: str = "challenge") -> np.ndarray:
        """Bool mask of an ROI name, an ROI class (any of its ROIs) or ``"All vertices"``."""
        _check_hemi(hemi)
        if name_or_class == ALL_VERTICES:
            if space == "fsaverage":
                return self.all_vertices(hemi).copy()
            if space != "challenge":
                raise ChallengeDataError(f"Unknown space={space!r}; expected one of {list(SPACES)}")
            return np.ones(self.n_vertices(hemi), dtype=bool)
        if name_or_class in ROI_CLASSES:
            return self.labels(hemi, name_or_class, space) != 0
        roi_class, roi_id = self._lookup(name_or_class)
        return self.labels(hemi, roi_class, space) == roi_id

    def masks(self, hemi: str, space: str = "challenge") -> dict[str, np.ndarray]:
        """``"All vertices"`` plus every ROI present on ``hemi`` -> bool mask (for ROI summaries)."""
        return {name: self.mask(hemi, name, space) for name in [ALL_VERTICES, *self.roi_names(hemi)]}

    def to_fsaverage(self, hemi: str, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Scatter per-challenge-vertex ``values`` of ``hemi`` into a (163842,) fsaverage array."""
        values = np.asarray(values)
        selected = self.all_vertices(hemi)
        if values.shape != (int(selected.sum()),):
            raise ChallengeDataError(
                f"subj{self.subject:02d} {hemi}: values have shape {values.shape}, expected "
                f"({int(selected.sum())},) (one per challenge vertex)"
            )
        surface = np.full(FSAVERAGE_N_VERTICES, fill, dtype=np.result_type(values.dtype, np.float32))
        surface[selected] = values
        return surface

    def _check_class(self, roi_class: str) -> None:
        """Refuse unknown ROI classes, listing the valid ones."""
        if roi_class not in ROI_CLASSES:
            raise ChallengeDataError(f"Unknown ROI class={roi_class!r}; expected one of {list(ROI_CLASSES)}")

    def _lookup(self, name: str) -> tuple[str, int]:
        """(class, id) of an ROI name; unknown names list every valid name."""
        found = [
            (roi_class, roi_id)
            for roi_class in self.roi_classes()
            for roi_id, roi_name in self.mapping(roi_class).items()
            if roi_id and roi_name == name
        ]
        if len(found) == 1:
            return found[0]
        if found:
            raise ChallengeDataError(
                f"ROI name {name!r} is in several classes {[c for c, _ in found]}; ask for one class instead"
            )
        valid = [ALL_VERTICES, *self.roi_classes()]
        for roi_class in self.roi_classes():
            valid += [roi_name for roi_id, roi_name in sorted(self.mapping(roi_class).items()) if roi_id]
        raise ChallengeDataError(f"Unknown ROI {name!r} for subj{self.subject:02d}; valid names: {valid}")


@dataclass(frozen=True)
class SubjectData:
    """One subject's training fMRI, image ids (row order), ROI atlas, and the test split's fMRI and noise ceiling
    (fraction in [0, 1]) where the data folder has them (None otherwise)."""

    subject: int
    fmri: dict[str, np.ndarray]
    train_ids: np.ndarray
    test_ids: np.ndarray
    train_images: list[Path]
    test_images: list[Path]
    noise_ceiling: dict[str, np.ndarray] | None
    rois: RoiAtlas
    test_fmri: dict[str, np.ndarray] | None = None

    @property
    def n_train(self) -> int:
        """Number of training images (fMRI rows)."""
        return len(self.train_ids)

    @property
    def n_test(self) -> int:
        """Number of test images (rows of a submission)."""
        return len(self.test_ids)


def _load_fmri(
    path: Path, n_rows: int, n_columns: int | None = None, *, check_finite: bool, split: str = "train"
) -> np.ndarray:
    """A float32 (n_images, n_vertices) fMRI array, memory-mapped when the file is float32 already."""
    fmri = _load_npy(path, mmap=True)
    if fmri.ndim != 2 or fmri.dtype.kind not in "fiu":
        raise ChallengeDataError(
            f"{path}: expected a 2-D float array (n_{split}, n_vertices), got shape {fmri.shape} dtype {fmri.dtype}"
        )
    if fmri.shape[0] != n_rows:
        raise ChallengeDataError(
            f"{path}: fMRI has {fmri.shape[0]} rows but the {split} image folder holds {n_rows} images; "
            "rows must match the images in file order"
        )
    if n_columns is not None and fmri.shape[1] != n_columns:
        raise ChallengeDataError(
            f"{path}: fMRI has shape {fmri.shape}, expected ({n_rows}, {n_columns}) (one column per vertex of the "
            "training fMRI)"
        )
    if fmri.dtype != np.float32:
        fmri = fmri.astype(np.float32)
    if check_finite:
        _check_finite(fmri, path)
    return fmri


def _hemisphere_files(folder: Path, pattern: str) -> dict[str, Path] | None:
    """``{hemi: folder/pattern}`` when both files exist, None when neither does; one alone is an error."""
    paths = {hemi: folder / pattern.format(hemi=hemi) for hemi in HEMISPHERES}
    present = [hemi for hemi, path in paths.items() if path.is_file()]
    if not present:
        return None
    if len(present) < len(HEMISPHERES):
        missing = next(path for path in paths.values() if not path.is_file())
        raise ChallengeDataError(f"Missing file {missing} (its other hemisphere exists; both are needed)")
    return paths


def load_noise_ceiling(path: str | Path, n_vertices: int) -> np.ndarray:
    """One hemisphere's noise ceiling as float32 (n_vertices,), checked to be a fraction in [0, 1].

    Values above 1 are percent units from another tool: refused, never rescaled silently.
    """
    path = Path(path)
    ceiling = _load_npy(path)
    if ceiling.shape != (n_vertices,) or ceiling.dtype.kind not in "fiu":
        raise ChallengeDataError(
            f"{path}: noise ceiling has shape {ceiling.shape} dtype {ceiling.dtype}, expected a float array of "
            f"shape ({n_vertices},)"
        )
    ceiling = ceiling.astype(np.float32)
    if not np.isfinite(ceiling).all():
        raise ChallengeDataError(f"{path}: noise ceiling has {int((~np.isfinite(ceiling)).sum())} NaN/inf values")
    if ceiling.size and (ceiling.max() > 1 or ceiling.min() < 0):
        raise ChallengeDataError(
            f"{path}: noise ceiling values run from {ceiling.min():g} to {ceiling.max():g}, expected a fraction in "
            "[0, 1] (the challenge's units); values above 1 look like percent: divide the file by 100 yourself"
        )
    return ceiling


def _load_test_split(
    folder: Path, n_test: int, n_vertices: Mapping[str, int], *, check_finite: bool
) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """(test fMRI, noise ceiling) of a subject folder's ``test_split``, each None when its files are absent."""
    fmri_paths = _hemisphere_files(folder, TEST_FMRI_FILE)
    test_fmri = None
    if fmri_paths is not None:
        test_fmri = {
            hemi: _load_fmri(path, n_test, n_vertices[hemi], check_finite=check_finite, split="test")
            for hemi, path in fmri_paths.items()
        }
    ceiling_paths = _hemisphere_files(folder, NOISE_CEILING_FILE)
    ceiling = None
    if ceiling_paths is not None:
        ceiling = {hemi: load_noise_ceiling(path, n_vertices[hemi]) for hemi, path in ceiling_paths.items()}
    return test_fmri, ceiling


def has_test_split(data_dir: str | Path, subjects: Iterable[int | str] | None = None) -> bool:
    """Whether every subject (default: all) has the test fMRI and noise ceiling that the official score needs."""
    numbers = list_subjects(data_dir) if subjects is None else [subject_number(s) for s in subjects]
    return all(
        (subject_dir(data_dir, number) / pattern.format(hemi=hemi)).is_file()
        for number in numbers
        for pattern in (TEST_FMRI_FILE, NOISE_CEILING_FILE)
        for hemi in HEMISPHERES
    )


def load_subject(data_dir: str | Path, subject: int | str, *, check_finite: bool = True) -> SubjectData:
    """Load and check one subject: fMRI (memory-mapped), image ids in row order, ROI atlas, and the test split's
    fMRI and noise ceiling when present.

    Raises ``ChallengeDataError`` naming the file when fMRI rows differ from the number of training (or test)
    images, fMRI has NaN/inf (skip the scan with ``check_finite=False``), the all-vertices mask does
    not select as many vertices as the fMRI has columns, a noise ceiling is not a fraction in [0, 1], or a
    file is missing.
    """
    folder = subject_dir(data_dir, subject)
    train_ids, train_images = list_images(data_dir, subject, "train")
    test_ids, test_images = list_images(data_dir, subject, "test")
    fmri = {
        hemi: _load_fmri(folder / TRAINING_FMRI_FILE.format(hemi=hemi), len(train_ids), check_finite=check_finite)
        for hemi in HEMISPHERES
    }
    n_vertices = {hemi: fmri[hemi].shape[1] for hemi in HEMISPHERES}
    rois = RoiAtlas(data_dir, subject, n_vertices=n_vertices)
    for hemi in HEMISPHERES:
        rois.all_vertices(hemi)
    test_fmri, noise_ceiling = _load_test_split(folder, len(test_ids), n_vertices, check_finite=check_finite)
    return SubjectData(
        subject=subject_number(subject),
        fmri=fmri,
        train_ids=train_ids,
        test_ids=test_ids,
        train_images=train_images,
        test_images=test_images,
        noise_ceiling=noise_ceiling,
        rois=rois,
        test_fmri=test_fmri,
    )
