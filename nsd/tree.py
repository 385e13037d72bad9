"""The raw NSD release's paths (relative to the NSD root folder), defined once, and the error of a bad raw tree.

Names follow the release (and the organisers' ``challenge_data_preparation.py``)::

    nsddata/experiments/nsd/nsd_expdesign.mat                     masterordering, subjectim, sharedix (1-based)
    nsddata/experiments/nsd/nsd_stim_info_merged.csv              optional
    nsddata_betas/ppdata/subjXX/fsaverage/betas_fithrf_GLMdenoise_RR/{lh,rh}.betas_sessionNN.mgh
    nsddata_betas/ppdata/subjXX/fsaverage/betas_fithrf_GLMdenoise_RR/{lh,rh}.ncsnr.mgh
    nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.nii.gz   int16, x 1/300
    nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/ncsnr.nii.gz
    nsddata/ppdata/subjXX/func1pt8mm/roi/{lh,rh}.nsdgeneral.nii.gz  volume mask per hemisphere (> 0 = in)
    nsddata/ppdata/subjXX/func1pt8mm/roi/{lh,rh}.<class>.nii.gz     volume ROI ids per hemisphere
    nsddata/freesurfer/fsaverage/label/{lh,rh}.nsdgeneral.mgz     fsaverage mask (> 0 = in)
    nsddata/freesurfer/subjXX/label/{lh,rh}.<class>.mgz           subject-surface ROI ids, names in <class>.mgz.ctab
    nsddata/ppdata/subjXX/transforms/{lh,rh}.white-to-fsaverage.mgz   1-based subject vertex per fsaverage vertex
    nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5                   imgBrick (73000, 425, 425, 3) uint8
"""

from __future__ import annotations

import re
from pathlib import Path

from encoders.errors import ChallengeDataError
from nsd.layout import subject_folder_name

__all__ = [
    "BETAS_DIR",
    "CTAB_FILE",
    "EXPDESIGN_FILE",
    "FSAVERAGE_LABEL",
    "MAX_NSD_SUBJECT",
    "NCSNR_FILE",
    "RawNsdError",
    "SESSION_FILE",
    "SPACES",
    "STIM_INFO_FILE",
    "STIMULI_FILE",
    "SUBJECT_LABEL",
    "SUBJECT_LABEL_DIR",
    "TO_FSAVERAGE",
    "VOLUME_LABEL",
    "check_nsd_subject",
    "is_raw_nsd",
    "list_nsd_subjects",
    "session_files",
]

MAX_NSD_SUBJECT = 8
SPACES = ("fsaverage", "func1pt8mm")
EXPDESIGN_FILE = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIM_INFO_FILE = "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
BETAS_DIR = "nsddata_betas/ppdata/{subject}/{space}/betas_fithrf_GLMdenoise_RR"
# per space: session file (hemi is "" for the volume) and ncsnr file
SESSION_FILE = {"fsaverage": "{hemi}.betas_session{session:02d}.mgh", "func1pt8mm": "betas_session{session:02d}.nii.gz"}
NCSNR_FILE = {"fsaverage": "{hemi}.ncsnr.mgh", "func1pt8mm": "ncsnr.nii.gz"}
VOLUME_LABEL = "nsddata/ppdata/{subject}/func1pt8mm/roi/{hemi}.{label}.nii.gz"  # a mask or an ROI class
FSAVERAGE_LABEL = "nsddata/freesurfer/fsaverage/label/{hemi}.{label}.mgz"
SUBJECT_LABEL_DIR = "nsddata/freesurfer/{subject}/label"
SUBJECT_LABEL = SUBJECT_LABEL_DIR + "/{hemi}.{roi_class}.mgz"
CTAB_FILE = SUBJECT_LABEL_DIR + "/{roi_class}.mgz.ctab"
TO_FSAVERAGE = "nsddata/ppdata/{subject}/transforms/{hemi}.white-to-fsaverage.mgz"
STIMULI_FILE = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"

_SESSION_NUMBER = {
    "fsaverage": re.compile(r"lh\.betas_session(\d+)\.mgh"),
    "func1pt8mm": re.compile(r"betas_session(\d+)\.nii\.gz"),
}


class RawNsdError(ChallengeDataError):
    """The raw NSD tree is missing a file or disagrees with itself (message names the file, expected and found)."""


def check_nsd_subject(subject: int | str) -> int:
    """The NSD subject number 1..8 of ``subject`` (``1``, ``"01"``, ``"subj01"``); anything else is refused."""
    from nsd.layout import LayoutError, subject_number

    try:
        number = subject_number(subject)
    except LayoutError:
        number = None
    if number is None or not 1 <= number <= MAX_NSD_SUBJECT:
        raise RawNsdError(f"Unknown NSD subject={subject!r}; NSD has subjects 1..{MAX_NSD_SUBJECT} (1, '01', 'subj01')")
    return number


def is_raw_nsd(path: str | Path) -> bool:
    """Whether ``path`` is the root of a raw NSD tree (it holds the experimental design)."""
    return (Path(path) / EXPDESIGN_FILE).is_file()


def list_nsd_subjects(nsd_dir: str | Path, space: str = "fsaverage") -> list[int]:
    """Subjects 1..8 with a betas folder in ``space``, sorted."""
    numbers = [n for n in range(1, MAX_NSD_SUBJECT + 1) if betas_dir(nsd_dir, n, space).is_dir()]
    if not numbers:
        raise RawNsdError(f"No subject has betas in {Path(nsd_dir) / BETAS_DIR.format(subject='subjXX', space=space)}")
    return numbers


def check_space(space: str) -> str:
    """Refuse any space but the two the betas come in."""
    if space not in SPACES:
        raise RawNsdError(f"Unknown space={space!r}; expected one of {list(SPACES)}")
    return space


def betas_dir(nsd_dir: str | Path, subject: int, space: str) -> Path:
    """The folder of a subject's single-trial betas in ``space``."""
    return Path(nsd_dir) / BETAS_DIR.format(subject=subject_folder_name(subject), space=check_space(space))


def session_files(nsd_dir: str | Path, subject: int, space: str) -> list[int]:
    """The session numbers with a betas file (lh for fsaverage), checked to run 1..N without a gap."""
    folder = betas_dir(nsd_dir, subject, space)
    if not folder.is_dir():
        raise RawNsdError(f"Missing betas folder {folder} for subj{subject:02d} in space {space!r}")
    found = sorted(
        int(match.group(1)) for path in folder.iterdir() if (match := _SESSION_NUMBER[space].fullmatch(path.name))
    )
    if not found:
        example = SESSION_FILE[space].format(hemi="lh", session=1)
        raise RawNsdError(f"No session betas in {folder}; expected files like {example}")
    missing = sorted(set(range(1, found[-1] + 1)) - set(found))
    if missing:
        name = SESSION_FILE[space].format(hemi="lh", session=missing[0])
        raise RawNsdError(
            f"Missing session file {folder / name}: sessions must run 1..{found[-1]} without a gap, "
            f"found {len(found)} files (missing sessions {missing[:10]})"
        )
    return found
