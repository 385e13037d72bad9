"""One raw-NSD subject as the grid's ``SubjectData``: betas read a session at a time, z-scored per session and
vertex, repeats averaged (or single trials), NaN vertices dropped, the noise ceiling from ncsnr, and ROI masks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.sparse
from tqdm.auto import tqdm

from encoders.challenge import RoiAtlas, SubjectData
from nsd.betas import read_session, zscore
from nsd.expdesign import load_expdesign
from nsd.labels import fsaverage_mask, read_surface_vector, read_volume, subject_rois, volume_mask, volume_rois
from nsd.layout import HEMISPHERES, ROI_CLASSES, subject_folder_name
from nsd.noise_ceiling import noise_ceiling
from nsd.split import TrialSplit, split_trials
from nsd.tree import (
    NCSNR_FILE,
    SESSION_FILE,
    SUBJECT_LABEL_DIR,
    RawNsdError,
    betas_dir,
    check_nsd_subject,
    check_space,
    session_files,
)

__all__ = ["NsdRoiAtlas", "NsdSubjectPlan", "load_nsd_subject", "load_planned", "plan_nsd_subject"]


class NsdRoiAtlas(RoiAtlas):
    """ROI masks held in memory (built from the raw NSD labels), with `RoiAtlas`'s interface.

    Classes whose subject labels were missing are absent from ``roi_classes()`` (their masks are empty);
    ``skipped`` maps each to the reason.
    """

    def __init__(
        self,
        subject: int,
        all_vertices: dict[str, np.ndarray],
        mappings: dict[str, dict[int, str]],
        fsaverage_labels: dict[tuple[str, str], np.ndarray],
        skipped: dict[str, str],
        source: Path,
    ):
        self.subject = subject
        self.roi_dir = source
        self.skipped = dict(skipped)
        self._n_vertices = None
        self._cache = {}
        self._all = all_vertices
        self._mappings = mappings
        self._fsaverage_labels = fsaverage_labels

    def roi_classes(self) -> list[str]:
        """The ROI classes whose labels the NSD tree has for this subject."""
        return [roi_class for roi_class in ROI_CLASSES if roi_class in self._mappings]

    def all_vertices(self, hemi: str) -> np.ndarray:
        """Bool fsaverage mask of the kept vertices (the ROI labels minus vertices NaN in any session)."""
        if hemi not in HEMISPHERES:
            raise RawNsdError(f"Unknown hemisphere={hemi!r}; expected one of {list(HEMISPHERES)}")
        return self._all[hemi]

    def mapping(self, roi_class: str) -> dict[int, str]:
        """ROI id -> name of one class (only "Unknown" for a skipped class)."""
        self._check_class(roi_class)
        return dict(self._mappings.get(roi_class, {0: "Unknown"}))

    def labels(self, hemi: str, roi_class: str, space: str = "challenge") -> np.ndarray:
        """Int ROI ids per vertex in challenge space (kept vertices) or on the whole surface; 0 = no ROI."""
        self._check_class(roi_class)
        selected = self.all_vertices(hemi)
        if space not in ("challenge", "fsaverage"):
            raise RawNsdError(f"Unknown space={space!r}; expected one of ['challenge', 'fsaverage']")
        labels = self._fsaverage_labels.get((hemi, roi_class), np.zeros(selected.size, dtype=np.int64))
        return labels if space == "fsaverage" else labels[selected]


def _chosen_sessions(present: list[int], sessions: int | Sequence[int] | None, where: Path) -> list[int]:
    """The session numbers to read: all present, the first ``sessions``, or the listed ones (each present)."""
    if sessions is None:
        return present
    if isinstance(sessions, (int, np.integer)):
        if not 1 <= sessions <= len(present):
            raise RawNsdError(f"sessions={sessions}: {where} has sessions 1..{len(present)}")
        return present[: int(sessions)]
    chosen = sorted({int(session) for session in sessions})
    absent = [session for session in chosen if session not in present]
    if absent or not chosen:
        raise RawNsdError(f"sessions={list(sessions)}: {where} has sessions 1..{len(present)}, not {absent}")
    return chosen


def _n_trials(path: Path) -> int:
    """Trials of a session file, from its header (no data read)."""
    try:
        return int(nib.load(path).shape[-1])
    except Exception as error:  # nibabel raises many kinds for a corrupt header
        raise RawNsdError(f"Cannot read session file {path}: {error}") from error


def _average_operator(rows: np.ndarray, n_rows: int) -> scipy.sparse.csr_matrix:
    """Sparse (n_rows, n_trials) sum of each row's trials (rows -1 are left out)."""
    used = np.flatnonzero(rows >= 0)
    ones = np.ones(used.size)
    return scipy.sparse.csr_matrix((ones, (rows[used], used)), shape=(n_rows, rows.size))


class _Accumulator:
    """Rows of one split (train or test) built session by session: sums of z-scored trials, or the trials."""

    def __init__(self, rows: np.ndarray, n_rows: int, n_vertices: int, average: bool):
        self.rows, self.average = rows, average
        self.n_rows = n_rows if average else int((rows >= 0).sum())
        self.values = np.zeros((self.n_rows, n_vertices), dtype=np.float32)  # the result's size, never twice it
        self.filled = 0

    def add(self, trials: slice, zscored: np.ndarray) -> None:
        rows = self.rows[trials]
        if self.average:
            self.values += _average_operator(rows, self.n_rows) @ zscored
        else:
            used = zscored[rows >= 0]
            self.values[self.filled : self.filled + len(used)] = used
            self.filled += len(used)

    def result(self, counts: np.ndarray | None, keep: np.ndarray) -> np.ndarray:
        values = self.values[:, keep]
        if self.average:
            values /= counts[:, None].astype(np.float32)
        return np.ascontiguousarray(values)


@dataclass(frozen=True)
class NsdSubjectPlan:
    """What loading a subject will read, known before any betas are: sessions, trials, masks, the split."""

    nsd_dir: Path
    subject: int
    space: str
    folder: Path
    sessions: list[int]
    per_session: int
    trial_ids: np.ndarray
    masks: dict[str, np.ndarray]
    split: TrialSplit

    def session_paths(self) -> list[Path]:
        """Every betas file to read, in reading order (one per hemisphere on fsaverage, one per session in the
        volume)."""
        hemis = HEMISPHERES if self.space == "fsaverage" else HEMISPHERES[:1]
        return [
            self.folder / SESSION_FILE[self.space].format(hemi=hemi, session=session)
            for session in self.sessions
            for hemi in hemis
        ]


def plan_nsd_subject(
    nsd_dir: str | Path,
    subject: int | str,
    *,
    space: str = "fsaverage",
    roi: str | Sequence[str] = "nsdgeneral",
    sessions: int | Sequence[int] | None = None,
    test: str | Sequence[int] | np.ndarray = "challenge",
) -> NsdSubjectPlan:
    """Check a subject's design, session files and masks and split its trials (arguments as `load_nsd_subject`)."""
    number = check_nsd_subject(subject)
    check_space(space)
    nsd_dir = Path(nsd_dir)
    design = load_expdesign(nsd_dir)
    folder = betas_dir(nsd_dir, number, space)
    present = session_files(nsd_dir, number, space)
    chosen = _chosen_sessions(present, sessions, folder)
    labels = [roi] if isinstance(roi, str) else list(roi)
    if space == "fsaverage":
        masks = {hemi: fsaverage_mask(nsd_dir, hemi, labels) for hemi in HEMISPHERES}
    else:
        masks = {hemi: volume_mask(nsd_dir, number, hemi, labels) for hemi in HEMISPHERES}
        if masks["lh"].shape != masks["rh"].shape:
            raise RawNsdError(f"subj{number:02d}: lh and rh volume masks differ in shape")

    first = folder / SESSION_FILE[space].format(hemi="lh", session=chosen[0])
    per_session = _n_trials(first)
    n_design_sessions, rest = divmod(design.n_trials, per_session)
    if rest or present[-1] > n_design_sessions:
        raise RawNsdError(
            f"{design.path} does not match the betas: masterordering has {design.n_trials} trials, not room for "
            f"{present[-1]} sessions of the {per_session} trials in {first}"
        )
    if len(present) < n_design_sessions:
        warnings.warn(
            f"subj{number:02d} has {len(present)} of the design's {n_design_sessions} sessions in {folder}; "
            "the sessions present are taken as its completed sessions",
            stacklevel=2,
        )
    trials = np.concatenate([np.arange((s - 1) * per_session, s * per_session) for s in chosen])
    trial_ids = design.trial_ids(number, trials)
    session_index = np.repeat(np.arange(len(chosen)), per_session)
    complete = chosen == list(range(1, n_design_sessions + 1))
    split = split_trials(trial_ids, session_index, len(chosen), test=test, shared=design.shared, complete=complete)
    return NsdSubjectPlan(nsd_dir, number, space, folder, chosen, per_session, trial_ids, masks, split)


def load_nsd_subject(
    nsd_dir: str | Path,
    subject: int | str,
    *,
    space: str = "fsaverage",
    roi: str | Sequence[str] = "nsdgeneral",
    sessions: int | Sequence[int] | None = None,
    average: bool = True,
    test: str | Sequence[int] | np.ndarray = "challenge",
    progress: bool = True,
) -> SubjectData:
    """Load one subject of a raw NSD tree as the `SubjectData` the encoders fit and score.

    Parameters
    ----------
    nsd_dir : str or Path
        The NSD root (holding ``nsddata``, ``nsddata_betas``).
    subject : int or str
        1..8, as ``1``, ``"01"`` or ``"subj01"``.
    space : {"fsaverage", "func1pt8mm"}, default="fsaverage"
        Betas space: fsaverage vertices, or the subject's 1.8 mm volume (int16 / 300), whose hemispheres are the
        ``roi/{lh,rh}.<label>.nii.gz`` masks; the atlas then holds flattened volumes (C order) for "fsaverage".
    roi : str or sequence of str, default="nsdgeneral"
        Labels whose union is "All vertices"; ``("nsdgeneral", "nsdgeneralRSC")`` is the challenge's (fsaverage).
    sessions : int or sequence of int, default=None
        The first N sessions, or the listed session numbers; None reads every session file present.
    average : bool, default=True
        Average each image's trials (rows = unique images, sorted by NSD id); False keeps single trials (rows in
        trial order, ids repeated) and the noise ceiling is that of one trial.
    test : "challenge", "shared1000" or sequence of int, default="challenge"
        The held-out images: the organisers' split, the shared images the subject saw, or these NSD ids.
    progress : bool, default=True
        A progress bar over sessions.

    Returns
    -------
    SubjectData
        float32 fMRI (train and test) per hemisphere, NSD ids, noise ceiling (fraction) and an `NsdRoiAtlas`;
        no image paths (images come from the stimulus hdf5 by NSD id).
    """
    plan = plan_nsd_subject(nsd_dir, subject, space=space, roi=roi, sessions=sessions, test=test)
    return load_planned(plan, average=average, progress=progress)


def load_planned(plan: NsdSubjectPlan, *, average: bool = True, progress: bool = True) -> SubjectData:
    """Read the betas a `plan_nsd_subject` plan names (see `load_nsd_subject`)."""
    number, nsd_dir, split, masks, folder = plan.subject, plan.nsd_dir, plan.split, plan.masks, plan.folder
    space = plan.space
    fmri, test_fmri, all_vertices = _read_betas(
        folder, space, plan.sessions, plan.per_session, masks, split, average, progress
    )
    ceilings = {}
    repeats = split.test_repeats if average else np.ones(1)
    for hemi in HEMISPHERES:
        path = folder / NCSNR_FILE[space].format(hemi=hemi)
        if space == "fsaverage":
            ncsnr = read_surface_vector(path, "noise ceiling SNR")
        else:
            ncsnr = read_volume(path, "noise ceiling SNR")
        if ncsnr.shape != masks[hemi].shape:
            raise RawNsdError(f"{path}: has shape {ncsnr.shape}, expected {masks[hemi].shape} (as the betas)")
        ncsnr = ncsnr.ravel()[all_vertices[hemi]].astype(np.float64)
        if not np.isfinite(ncsnr).all():
            warnings.warn(
                f"{path}: {int((~np.isfinite(ncsnr)).sum())} kept vertices have no ncsnr; ceiling 0",
                stacklevel=2,
            )
            ncsnr = np.nan_to_num(ncsnr, nan=0.0, posinf=0.0, neginf=0.0)
        ceilings[hemi] = noise_ceiling(ncsnr, repeats)
    if space == "fsaverage":
        mappings, fs_labels, skipped = subject_rois(nsd_dir, number, {hemi: masks[hemi].size for hemi in HEMISPHERES})
    else:
        mappings, fs_labels, skipped = volume_rois(nsd_dir, number, masks["lh"].shape)
    for (hemi, _), values in fs_labels.items():
        values[~all_vertices[hemi]] = 0
    label_dir = nsd_dir / SUBJECT_LABEL_DIR.format(subject=subject_folder_name(number))
    rois = NsdRoiAtlas(number, all_vertices, mappings, fs_labels, skipped, label_dir)
    train_ids, test_ids = split.train_ids, split.test_ids
    if not average:
        train_ids, test_ids = plan.trial_ids[split.train_row >= 0], plan.trial_ids[split.test_row >= 0]
    return SubjectData(
        subject=number,
        fmri=fmri,
        train_ids=train_ids,
        test_ids=test_ids,
        train_images=[],
        test_images=[],
        noise_ceiling=ceilings,
        rois=rois,
        test_fmri=test_fmri,
    )


def _read_betas(
    folder: Path,
    space: str,
    chosen: list[int],
    per_session: int,
    masks: dict[str, np.ndarray],
    split: TrialSplit,
    average: bool,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train fMRI, test fMRI, kept fsaverage vertices) per hemisphere, reading one session at a time."""
    n_selected = {hemi: int(mask.sum()) for hemi, mask in masks.items()}
    train = {hemi: _Accumulator(split.train_row, len(split.train_ids), n_selected[hemi], average) for hemi in masks}
    test = {hemi: _Accumulator(split.test_row, len(split.test_ids), n_selected[hemi], average) for hemi in masks}
    bad = {hemi: np.zeros(n, dtype=bool) for hemi, n in n_selected.items()}
    bar = tqdm(chosen, desc=f"{folder.parts[-3]} sessions", unit="session", disable=not progress)
    if space != "fsaverage":  # one volume holds both hemispheres: read their union, then split its columns
        union = masks["lh"] | masks["rh"]
        columns = {hemi: np.flatnonzero(mask[union]) for hemi, mask in masks.items()}
    for position, session in enumerate(bar):
        trials = slice(position * per_session, (position + 1) * per_session)
        if space == "fsaverage":  # a file per hemisphere
            zscored = {
                hemi: zscore(
                    read_session(folder / SESSION_FILE[space].format(hemi=hemi, session=session), mask, per_session)
                )
                for hemi, mask in masks.items()
            }
        else:  # one volume for both hemispheres: read once
            both = zscore(read_session(folder / SESSION_FILE[space].format(session=session), union, per_session))
            zscored = {hemi: both[:, columns[hemi]] for hemi in masks}
        for hemi, values in zscored.items():
            bad[hemi] |= np.isnan(values).any(axis=0)
            train[hemi].add(trials, values)
            test[hemi].add(trials, values)
    train_counts = np.bincount(split.train_row[split.train_row >= 0], minlength=len(split.train_ids))
    fmri = {hemi: train[hemi].result(train_counts, ~bad[hemi]) for hemi in masks}
    test_fmri = {hemi: test[hemi].result(split.test_repeats, ~bad[hemi]) for hemi in masks}
    kept = {}
    for hemi, mask in masks.items():
        kept[hemi] = mask.ravel().copy()  # a volume's mask is flattened (C order, the order of its columns)
        kept[hemi][np.flatnonzero(kept[hemi])[bad[hemi]]] = False
    return fmri, test_fmri, kept
