"""Write raw NSD subjects in the exact Algonauts 2023 layout (`nsd.layout`), following the organisers' recipe.

Each subject is written to a hidden temporary folder next to ``out/subjXX`` and renamed into place when complete,
so a killed run leaves no half-written subject: a rerun skips the subjects already there and redoes the others.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from encoders.challenge import SubjectData
from featurestore.stimuli.nsd_hdf5 import IMAGE_SHAPE, NSDHdf5
from nsd.layout import (
    ALL_VERTICES_MASK,
    HEMISPHERES,
    NOISE_CEILING_FILE,
    ROI_MAPPING,
    ROI_MASK,
    ROI_MASK_FOLDER,
    SPLIT_FOLDERS,
    TEST_FMRI_FILE,
    TRAINING_FMRI_FILE,
    subject_folder_name,
)
from nsd.subject import NsdSubjectPlan, load_planned, plan_nsd_subject
from nsd.tree import NCSNR_FILE, STIMULI_FILE, RawNsdError, check_nsd_subject

__all__ = ["PreparePlan", "prepare_nsd"]

PARTIAL = ".{folder}.partial"
RECIPE_FILE = "nsd_recipe.json"  # in each prepared subject folder: what it was made from, checked on a rerun


@dataclass
class PreparePlan:
    """What `prepare_nsd` reads and writes per subject (or did, or skipped because it was there)."""

    out: Path
    done: list[int] = field(default_factory=list)
    todo: dict[int, NsdSubjectPlan] = field(default_factory=dict)
    read_bytes: int = 0
    write_bytes: int = 0

    def describe(self) -> str:
        """Lines for ``--dry-run``: files read and written, sizes in GB."""
        lines = [f"already prepared (skipped): {subject_folder_name(s)}" for s in self.done]
        for number, plan in self.todo.items():
            split = plan.split
            n_vertices = {hemi: int(mask.sum()) for hemi, mask in plan.masks.items()}
            lines += [
                f"{subject_folder_name(number)}: read {len(plan.sessions)} sessions x 2 hemispheres from "
                f"{plan.folder} ({plan.per_session} trials each), "
                f"{len(split.train_ids)} train + {len(split.test_ids)} test images from {plan.nsd_dir / STIMULI_FILE}",
                f"  write {self.out / subject_folder_name(number)}: training fMRI ({len(split.train_ids)} x "
                f"{n_vertices['lh']} lh, {n_vertices['rh']} rh vertices at most), test fMRI, noise ceiling, ROI "
                "masks, PNG images",
            ]
        lines.append(f"reads {self.read_bytes / 1e9:.2f} GB, writes at most {self.write_bytes / 1e9:.2f} GB")
        return "\n".join(lines)


def _sizes(plan: NsdSubjectPlan) -> tuple[int, int]:
    """(bytes read, bytes written at most) of one subject: betas + ncsnr + images; float32 fMRI + raw-size PNGs."""
    paths = plan.session_paths() + [plan.folder / NCSNR_FILE[plan.space].format(hemi=h) for h in HEMISPHERES]
    n_images = len(plan.split.train_ids) + len(plan.split.test_ids)
    n_vertices = sum(int(mask.sum()) for mask in plan.masks.values())
    image_bytes = int(np.prod(IMAGE_SHAPE))  # uncompressed, as read from the hdf5; a PNG is smaller
    read = sum(path.stat().st_size for path in paths) + n_images * image_bytes
    return read, n_images * (n_vertices * 4 + image_bytes)


def _save(path: Path, array: np.ndarray | dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def _write_subject(data: SubjectData, folder: Path, stimuli: Path, progress: bool) -> None:
    """fMRI, noise ceiling, ROI masks and PNG images of one subject, in the challenge's file names."""
    for hemi in HEMISPHERES:
        _save(folder / TRAINING_FMRI_FILE.format(hemi=hemi), data.fmri[hemi])
        _save(folder / TEST_FMRI_FILE.format(hemi=hemi), data.test_fmri[hemi])
        _save(folder / NOISE_CEILING_FILE.format(hemi=hemi), data.noise_ceiling[hemi])
        roi_dir = folder / ROI_MASK_FOLDER
        _save(roi_dir / ALL_VERTICES_MASK.format(hemi=hemi), data.rois.all_vertices(hemi).astype(np.int64))
        for roi_class in data.rois.roi_classes() if not data.rois.skipped else ():
            _save(roi_dir / ROI_MAPPING.format(roi_class=roi_class), data.rois.mapping(roi_class))
            for space in ("challenge", "fsaverage"):
                name = ROI_MASK.format(hemi=hemi, roi_class=roi_class, space=space)
                _save(roi_dir / name, data.rois.labels(hemi, roi_class, space))
    source = NSDHdf5(stimuli, ids=np.union1d(data.train_ids, data.test_ids))
    try:
        for split, ids in (("train", data.train_ids), ("test", data.test_ids)):
            images = folder.joinpath(*SPLIT_FOLDERS[split])
            images.mkdir(parents=True)
            bar = tqdm(ids, desc=f"subj{data.subject:02d} {split} images", unit="image", disable=not progress)
            for row, nsd_id in enumerate(bar, start=1):
                source.load(int(nsd_id)).convert("RGB").save(images / f"{split}-{row:04d}_nsd-{nsd_id:05d}.png")
    finally:
        source.close()


def _recipe(nsd_dir: Path, roi: str | Sequence[str], test: str | Sequence[int]) -> dict:
    """What a prepared subject depends on besides the subject number (JSON-ready)."""
    return {
        "nsd_dir": str(nsd_dir.resolve()),
        "roi": [roi] if isinstance(roi, str) else list(roi),
        "test": test if isinstance(test, str) else sorted(int(i) for i in test),
        "space": "fsaverage",
    }


def _check_prepared(folder: Path, recipe: dict) -> None:
    """Refuse to skip a subject folder made from another recipe (or not by `prepare_nsd`): no stale data."""
    path = folder / RECIPE_FILE
    if not path.is_file():
        raise RawNsdError(
            f"{folder} exists but has no {RECIPE_FILE}, so it was not written by prepare-nsd; remove it or choose "
            "another output folder"
        )
    stored = json.loads(path.read_text())
    changed = [f"{key}={stored.get(key)!r}, now {value!r}" for key, value in recipe.items() if stored.get(key) != value]
    if changed:
        raise RawNsdError(
            f"{folder} was prepared with another recipe ({'; '.join(changed)}); remove it or choose another output "
            "folder"
        )


def prepare_nsd(
    nsd_dir: str | Path,
    subjects: Iterable[int | str],
    out: str | Path,
    *,
    roi: str | Sequence[str] = "nsdgeneral",
    test: str | Sequence[int] = "challenge",
    require_rois: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> PreparePlan:
    """Prepare raw NSD subjects as Algonauts 2023 folders ``out/subjXX`` (resumable; see the module docstring).

    ``roi=("nsdgeneral", "nsdgeneralRSC")`` gives the challenge's vertices. Subjects without ROI labels (or
    without the native-to-fsaverage mapping) get the all-vertices masks only, with a warning naming the classes
    skipped and why; ``require_rois`` makes that an error. ``dry_run`` checks the inputs and returns the plan
    without reading betas or writing anything.
    """
    nsd_dir, out = Path(nsd_dir), Path(out)
    numbers = list(dict.fromkeys(check_nsd_subject(subject) for subject in subjects))
    stimuli = nsd_dir / STIMULI_FILE
    if not stimuli.is_file():
        raise RawNsdError(f"Missing file {stimuli} (the NSD images, written as PNG files)")
    plan = PreparePlan(out)
    recipe = _recipe(nsd_dir, roi, test)
    for number in numbers:
        if (out / subject_folder_name(number)).is_dir():
            _check_prepared(out / subject_folder_name(number), recipe)
            plan.done.append(number)
            continue
        plan.todo[number] = plan_nsd_subject(nsd_dir, number, roi=roi, test=test)
        read, written = _sizes(plan.todo[number])
        plan.read_bytes += read
        plan.write_bytes += written
    if dry_run:
        return plan
    out.mkdir(parents=True, exist_ok=True)
    for number in plan.todo:
        final = out / subject_folder_name(number)
        partial = out / PARTIAL.format(folder=final.name)
        if partial.exists():  # left by a killed run
            shutil.rmtree(partial)
        data = load_planned(plan.todo[number], progress=progress)
        skipped = data.rois.skipped
        if skipped:  # the challenge reader takes all six classes or none: a partial set is not written
            skipped = {**dict.fromkeys(data.rois.roi_classes(), "another class is missing"), **skipped}
            by_reason: dict[str, list[str]] = {}
            for name, reason in skipped.items():
                by_reason.setdefault(reason, []).append(name)
            reasons = "; ".join(f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())
            if require_rois:
                raise RawNsdError(f"subj{number:02d}: ROI classes missing ({reasons}); nothing written for it")
            warnings.warn(
                f"subj{number:02d}: only the all-vertices masks are written; ROI classes skipped: {reasons}",
                stacklevel=2,
            )
        try:
            _write_subject(data, partial, stimuli, progress)
            recorded = {**recipe, "sessions": plan.todo[number].sessions}
            (partial / RECIPE_FILE).write_text(json.dumps(recorded, indent=1) + "\n")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(final)
    return plan
