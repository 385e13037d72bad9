"""The Algonauts 2023 challenge data layout, defined once: folders, file names, id ranges, ROI classes, subjects.

Per subject ``<data>/subjXX``::

    training_split/training_fmri/{lh,rh}_training_fmri.npy    (n_train, n_vertices_hemi)
    training_split/training_images/train-0001_nsd-00013.png    1-based row, 0-based NSD id
    test_split/test_images/test-0001_nsd-00845.png
    test_split/test_fmri/{lh,rh}_test_fmri.npy                 (n_test, n_vertices_hemi), post-challenge release
    test_split/noise_ceiling/{lh,rh}_noise_ceiling.npy         (n_vertices_hemi,), fraction in [0, 1]
    roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy          (163842,) 0/1: the challenge vertices
    roi_masks/{lh,rh}.<class>_{challenge,fsaverage}_space.npy   int ROI ids (0 = no ROI)
    roi_masks/mapping_<class>.npy                               pickled dict {id: ROI name}

A submission holds ``subjXX/{lh,rh}_pred_test.npy`` at its top level. This module imports nothing heavy, so any
part of the project (a reader without torch, the command lines) can use it.
"""

from __future__ import annotations

import numbers
import os
import re
from pathlib import Path

__all__ = [
    "ALL_VERTICES_MASK",
    "FSAVERAGE5_N_VERTICES",
    "FSAVERAGE_N_VERTICES",
    "HEMISPHERES",
    "IMAGE_NAME_PATTERN",
    "LayoutError",
    "MAX_SUBJECT",
    "NOISE_CEILING_FILE",
    "N_NSD_IMAGES",
    "PREDICTION_FILE",
    "ROI_CLASSES",
    "ROI_MAPPING",
    "ROI_MASK",
    "ROI_NAMES",
    "SPLIT_FOLDERS",
    "SUBJECT_FOLDER",
    "TEST_FMRI_FILE",
    "TRAINING_FMRI_FILE",
    "parse_image_name",
    "subject_folder_name",
    "subject_number",
]

HEMISPHERES = ("lh", "rh")
N_NSD_IMAGES = 73000  # NSD ids run 0..72999
FSAVERAGE_N_VERTICES = 163842  # per hemisphere
FSAVERAGE5_N_VERTICES = 10242  # nilearn's bundled mesh: the first 10,242 vertices of fsaverage
MAX_SUBJECT = 99  # subjXX folders: the challenge has subj01..subj08, demo data may have more

SPLIT_FOLDERS: dict[str, tuple[str, str]] = {
    "train": ("training_split", "training_images"),
    "test": ("test_split", "test_images"),
}
TRAINING_FMRI_FILE = "training_split/training_fmri/{hemi}_training_fmri.npy"
TEST_FMRI_FILE = "test_split/test_fmri/{hemi}_test_fmri.npy"
NOISE_CEILING_FILE = "test_split/noise_ceiling/{hemi}_noise_ceiling.npy"
ROI_MASK_FOLDER = "roi_masks"
ALL_VERTICES_MASK = "{hemi}.all-vertices_fsaverage_space.npy"
ROI_MASK = "{hemi}.{roi_class}_{space}_space.npy"
ROI_MAPPING = "mapping_{roi_class}.npy"
PREDICTION_FILE = "{hemi}_pred_test.npy"

# the six ROI classes of the challenge and the ROI names of each (ids 1.. in this order in the mapping files)
ROI_NAMES: dict[str, tuple[str, ...]] = {
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2", "mTL-bodies"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"),
    "streams": ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"),
}
ROI_CLASSES = tuple(ROI_NAMES)

IMAGE_NAME = re.compile(r"(train|test)-(\d{4,})_nsd-(\d{5})\.png")
IMAGE_NAME_PATTERN = (
    "'<train|test>-<row>_nsd-<id>.png' (1-based row of 4 or more digits, 0-based 5-digit NSD id), "
    "e.g. 'train-0001_nsd-00013.png' or 'test-0001_nsd-00845.png'"
)
SUBJECT_FOLDER = re.compile(r"subj(\d\d)")  # match with fullmatch
_SUBJECT_TEXT = re.compile(r"(?:subj)?(\d{1,2})")


class LayoutError(ValueError):
    """A name that does not follow the layout (an image file name, a subject); the message says the expected form."""


def parse_image_name(name: str | os.PathLike) -> tuple[str, int, int]:
    """Split an Algonauts image file name into (split, 1-based row, 0-based NSD id).

    >>> parse_image_name("train-0001_nsd-00013.png")
    ('train', 1, 13)
    """
    match = IMAGE_NAME.fullmatch(Path(name).name)
    if match is None:
        raise LayoutError(f"cannot parse image file name {os.fspath(name)}: expected {IMAGE_NAME_PATTERN}")
    split, row, nsd_id = match.group(1), int(match.group(2)), int(match.group(3))
    if row == 0:
        raise LayoutError(f"image file {os.fspath(name)} has row 0: rows are 1-based; expected {IMAGE_NAME_PATTERN}")
    if nsd_id >= N_NSD_IMAGES:
        raise LayoutError(f"image file {os.fspath(name)} names NSD id {nsd_id}: NSD ids are 0..{N_NSD_IMAGES - 1}")
    return split, row, nsd_id


def subject_number(subject: int | str) -> int:
    """The number of a subject given as ``1``, ``"01"`` or ``"subj01"``: one parser, so every module accepts the same.

    Numbers run 1..99, what ``subjXX`` folders hold (numpy integers count as ints; bools do not).
    """
    number = None
    if isinstance(subject, numbers.Integral) and not isinstance(subject, bool):
        number = int(subject)
    elif isinstance(subject, str) and (match := _SUBJECT_TEXT.fullmatch(subject)):
        number = int(match.group(1))
    if number is None or not 1 <= number <= MAX_SUBJECT:
        raise LayoutError(
            f"Unknown subject={subject!r}; expected a number 1..{MAX_SUBJECT} as an int, '1', '01' or 'subj01'"
        )
    return number


def subject_folder_name(subject: int | str) -> str:
    """The ``subjXX`` folder name of a subject given in any form :func:`subject_number` accepts."""
    return f"subj{subject_number(subject):02d}"
