"""Labels of the raw NSD tree: the nsdgeneral mask on fsaverage and the subjects' ROI labels mapped to fsaverage
(nearest neighbour through ``{hemi}.white-to-fsaverage.mgz``, as nsdcode's ``nsd_mapdata`` does), and their
per-hemisphere versions in the 1.8 mm volume."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from nsd.layout import HEMISPHERES, ROI_CLASSES, subject_folder_name
from nsd.tree import CTAB_FILE, FSAVERAGE_LABEL, SUBJECT_LABEL, TO_FSAVERAGE, VOLUME_LABEL, RawNsdError

__all__ = [
    "fsaverage_mask",
    "read_ctab",
    "read_surface_vector",
    "read_volume",
    "subject_rois",
    "volume_mask",
    "volume_rois",
]


def read_surface_vector(path: Path, what: str) -> np.ndarray:
    """One value per vertex from a FreeSurfer .mgh/.mgz file (any singleton dims squeezed)."""
    if not path.is_file():
        raise RawNsdError(f"Missing file {path} ({what})")
    try:
        data = np.asanyarray(nib.load(path).dataobj)
    except Exception as error:  # nibabel raises many kinds for a corrupt file
        raise RawNsdError(f"Cannot read {path} as FreeSurfer .mgh/.mgz ({what}): {error}") from error
    data = data.reshape(data.shape[0], -1) if data.ndim > 1 else data[:, None]
    if data.shape[1] != 1:
        raise RawNsdError(f"{path}: {what} has shape {data.shape}, expected one value per vertex")
    return data[:, 0]


def read_volume(path: Path, what: str) -> np.ndarray:
    """A 3-D NIfTI volume (values as stored, scaling applied)."""
    if not path.is_file():
        raise RawNsdError(f"Missing file {path} ({what})")
    try:
        data = np.asanyarray(nib.load(path).dataobj)
    except Exception as error:  # nibabel raises many kinds for a corrupt file
        raise RawNsdError(f"Cannot read {path} as NIfTI ({what}): {error}") from error
    if data.ndim != 3:
        raise RawNsdError(f"{path}: {what} has shape {data.shape}, expected a 3-D volume")
    return data


def volume_mask(nsd_dir: Path, subject: int, hemi: str, labels: Sequence[str]) -> np.ndarray:
    """Bool 3-D mask of one hemisphere in the 1.8 mm volume: the union of ``{hemi}.<label>.nii.gz`` (value > 0)."""
    folder = subject_folder_name(subject)
    masks = [
        read_volume(Path(nsd_dir) / VOLUME_LABEL.format(subject=folder, hemi=hemi, label=label), f"{label} mask") > 0
        for label in labels
    ]
    if any(mask.shape != masks[0].shape for mask in masks):
        raise RawNsdError(f"subj{subject:02d} {hemi} volume labels {list(labels)} have different shapes")
    return np.logical_or.reduce(masks)


def volume_rois(
    nsd_dir: Path, subject: int, shape: tuple[int, ...]
) -> tuple[dict[str, dict[int, str]], dict[tuple[str, str], np.ndarray], dict[str, str]]:
    """(mappings, flattened volume labels per (hemi, class), skipped class -> reason) in the 1.8 mm volume."""
    folder = subject_folder_name(subject)
    nsd_dir = Path(nsd_dir)
    mappings, labels, skipped = {}, {}, {}
    for roi_class in ROI_CLASSES:
        ctab = nsd_dir / CTAB_FILE.format(subject=folder, roi_class=roi_class)
        paths = {
            hemi: nsd_dir / VOLUME_LABEL.format(subject=folder, hemi=hemi, label=roi_class) for hemi in HEMISPHERES
        }
        absent = [path for path in (ctab, *paths.values()) if not path.is_file()]
        if absent:
            skipped[roi_class] = f"missing {absent[0]}"
            continue
        mappings[roi_class] = read_ctab(ctab)
        for hemi, path in paths.items():
            values = read_volume(path, f"{roi_class} ROI ids")
            if values.shape != shape:
                raise RawNsdError(f"{path}: has shape {values.shape}, expected {shape} (as the betas)")
            labels[(hemi, roi_class)] = np.maximum(np.rint(values).astype(np.int64), 0).ravel()
    return mappings, labels, skipped


def fsaverage_mask(nsd_dir: Path, hemi: str, labels: Sequence[str]) -> np.ndarray:
    """Bool fsaverage mask: the union of the labels (value > 0), e.g. nsdgeneral (+ nsdgeneralRSC)."""
    masks = [
        read_surface_vector(Path(nsd_dir) / FSAVERAGE_LABEL.format(hemi=hemi, label=label), f"{label} label") > 0
        for label in labels
    ]
    if any(mask.shape != masks[0].shape for mask in masks):
        raise RawNsdError(
            f"{hemi} labels {list(labels)} have different vertex counts {[m.size for m in masks]}; expected one surface"
        )
    return np.logical_or.reduce(masks)


def read_ctab(path: Path) -> dict[int, str]:
    """ROI id -> name from a FreeSurfer colour table (``id name [r g b a]`` per line), 0 = "Unknown"."""
    if not path.is_file():
        raise RawNsdError(f"Missing file {path} (ROI names)")
    mapping: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2 or not fields[0].lstrip("-").isdigit():
            raise RawNsdError(f"{path} line {number}: expected 'id name', got {line!r}")
        mapping[int(fields[0])] = fields[1]
    return mapping


def subject_rois(
    nsd_dir: Path, subject: int, n_fsaverage: dict[str, int]
) -> tuple[dict[str, dict[int, str]], dict[tuple[str, str], np.ndarray], dict[str, str]]:
    """(mappings, fsaverage labels per (hemi, class), skipped class -> reason) of one subject's six ROI classes.

    A class is skipped (not an error) when its label, colour table or the native-to-fsaverage mapping is missing.
    """
    folder = subject_folder_name(subject)
    nsd_dir = Path(nsd_dir)
    transforms = {hemi: nsd_dir / TO_FSAVERAGE.format(subject=folder, hemi=hemi) for hemi in n_fsaverage}
    missing = [path for path in transforms.values() if not path.is_file()]
    if missing:
        reason = f"no native-to-fsaverage mapping {missing[0]}"
        return {}, {}, dict.fromkeys(ROI_CLASSES, reason)
    index = {}
    for hemi, path in transforms.items():
        values = read_surface_vector(path, "native-to-fsaverage vertex indices")
        if values.shape != (n_fsaverage[hemi],):
            raise RawNsdError(
                f"{path}: has {values.size} entries, expected {n_fsaverage[hemi]} (one per fsaverage vertex of the "
                "betas)"
            )
        index[hemi] = np.rint(values).astype(np.int64) - 1  # 1-based subject vertices
    mappings, labels, skipped = {}, {}, {}
    for roi_class in ROI_CLASSES:
        paths = [nsd_dir / CTAB_FILE.format(subject=folder, roi_class=roi_class)]
        paths += [nsd_dir / SUBJECT_LABEL.format(subject=folder, hemi=hemi, roi_class=roi_class) for hemi in index]
        absent = [path for path in paths if not path.is_file()]
        if absent:
            skipped[roi_class] = f"missing {absent[0]}"
            continue
        mappings[roi_class] = read_ctab(paths[0])
        for hemi, path in zip(index, paths[1:]):
            native = read_surface_vector(path, f"{roi_class} ROI ids")
            if index[hemi].min() < 0 or index[hemi].max() >= native.size:
                raise RawNsdError(
                    f"{transforms[hemi]}: indexes subject vertices {index[hemi].min() + 1}..{index[hemi].max() + 1} "
                    f"but {path} has {native.size} vertices"
                )
            labels[(hemi, roi_class)] = np.maximum(np.rint(native[index[hemi]]).astype(np.int64), 0)  # -1: no data
    return mappings, labels, skipped
