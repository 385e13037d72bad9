"""Tiny Algonauts 2023 data folder (2 subjects, 32x32 PNGs, ~60 vertices per hemisphere) for encoder tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from nilearn import datasets, surface
from PIL import Image

ROI_NAMES = {
    "prf-visualrois": ["V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"],
    "floc-bodies": ["EBA", "FBA-1", "FBA-2", "mTL-bodies"],
    "floc-faces": ["OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"],
    "floc-places": ["OPA", "PPA", "RSC"],
    "floc-words": ["OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"],
    "streams": ["early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"],
}
# subject -> (n lh vertices, n rh vertices); subj02 rh lacks the ROI below (real subjects lack some ROIs)
N_VERTICES = {1: (60, 56), 2: (52, 48)}
ABSENT_ROI = (2, "rh", "floc-words", "mTL-words")
N_TRAIN, N_TEST = 12, 4


def _posterior_vertices(hemi: str, n: int) -> np.ndarray:
    """The ``n`` most posterior fsaverage5 vertices (also fsaverage vertices), sorted: occipital 'visual' cortex."""
    mesh = datasets.fetch_surf_fsaverage("fsaverage5")[f"pial_{'left' if hemi == 'lh' else 'right'}"]
    coords, _ = surface.load_surf_mesh(mesh)
    return np.sort(np.argsort(coords[:, 1])[:n])


def _write_images(folder: Path, prefix: str, ids: np.ndarray, rng: np.random.Generator) -> None:
    """Random 32x32 RGB PNGs named like the challenge (``train-0001_nsd-00013.png``)."""
    folder.mkdir(parents=True)
    for row, nsd_id in enumerate(ids, start=1):
        pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{prefix}-{row:04d}_nsd-{nsd_id:05d}.png")


def _write_roi_masks(folder: Path, subject: int, hemi: str, vertices: np.ndarray) -> None:
    """All-vertices mask plus every ROI class in challenge and fsaverage space, and the mappings."""
    folder.mkdir(parents=True, exist_ok=True)
    all_vertices = np.zeros(163842, dtype=np.int32)
    all_vertices[vertices] = 1
    np.save(folder / f"{hemi}.all-vertices_fsaverage_space.npy", all_vertices)
    for offset, (roi_class, names) in enumerate(ROI_NAMES.items()):
        np.save(folder / f"mapping_{roi_class}.npy", {0: "Unknown", **dict(enumerate(names, start=1))})
        labels = ((np.arange(len(vertices)) + offset) % (len(names) + 1)).astype(np.int32)
        if ABSENT_ROI[:3] == (subject, hemi, roi_class):
            labels[labels == names.index(ABSENT_ROI[3]) + 1] = 0
        fsaverage_labels = np.zeros(163842, dtype=np.int32)
        fsaverage_labels[vertices] = labels
        np.save(folder / f"{hemi}.{roi_class}_challenge_space.npy", labels)
        np.save(folder / f"{hemi}.{roi_class}_fsaverage_space.npy", fsaverage_labels)


def write_algonauts(root: Path, seed: int = 0) -> Path:
    """Write the tiny challenge layout under ``root``; subjects share 4 NSD ids, rows not sorted by id."""
    rng = np.random.default_rng(seed)
    shared = rng.choice(73000, size=4, replace=False)
    for subject, counts in N_VERTICES.items():
        folder = root / f"subj{subject:02d}"
        own = rng.choice(np.setdiff1d(np.arange(73000), shared), size=N_TRAIN + N_TEST - 4, replace=False)
        ids = rng.permutation(np.concatenate([shared, own]))
        _write_images(folder / "training_split" / "training_images", "train", ids[:N_TRAIN], rng)
        _write_images(folder / "test_split" / "test_images", "test", ids[N_TRAIN:], rng)
        (folder / "training_split" / "training_fmri").mkdir(parents=True)
        for hemi, n_vertices in zip(("lh", "rh"), counts):
            fmri = rng.standard_normal((N_TRAIN, n_vertices)).astype(np.float32)
            np.save(folder / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy", fmri)
            _write_roi_masks(folder / "roi_masks", subject, hemi, _posterior_vertices(hemi, n_vertices))
            if subject == 1:  # the test split's fMRI and noise ceiling (a fraction), as the post-challenge release
                for name in ("test_fmri", "noise_ceiling"):
                    (folder / "test_split" / name).mkdir(exist_ok=True)
                test_fmri = rng.standard_normal((N_TEST, n_vertices)).astype(np.float32)
                np.save(folder / "test_split" / "test_fmri" / f"{hemi}_test_fmri.npy", test_fmri)
                ceiling = rng.uniform(0, 1, n_vertices).astype(np.float32)
                np.save(folder / "test_split" / "noise_ceiling" / f"{hemi}_noise_ceiling.npy", ceiling)
    return root


@pytest.fixture(scope="session")
def algonauts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only tiny Algonauts 2023 folder shared by the session (copy it before changing anything)."""
    return write_algonauts(tmp_path_factory.mktemp("algonauts"))


@pytest.fixture(scope="session")
def algonauts_spec() -> SimpleNamespace:
    """What the tiny folder holds: roi_names, n_vertices {subject: (lh, rh)}, absent_roi, n_train, n_test."""
    return SimpleNamespace(
        roi_names=ROI_NAMES, n_vertices=N_VERTICES, absent_roi=ABSENT_ROI, n_train=N_TRAIN, n_test=N_TEST
    )


@pytest.fixture
def algonauts_copy(algonauts_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny Algonauts folder that a test may corrupt."""
    return Path(shutil.copytree(algonauts_dir, tmp_path / "data"))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory):
    """``(DemoOutputs, out_dir)`` of one tiny demo run shared by the session (copy anything a test changes)."""
    import torch

    from encoders.demo import run_demo

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    return run_demo(out, size="tiny", progress=False), out
