"""A miniature raw NSD tree with the release's paths and formats, written once per session with nibabel (.mgh,
.mgz), scipy.io (.mat) and h5py, from a planted linear truth with a known ncsnr.

Design: 6 sessions of 20 trials (120 trials), 60 image columns per subject shown 1-3 times, the first 8 of them
the shared images. subj01 has all 6 sessions (complete) and its ROI labels; subj02 has 5 sessions, no ROI labels,
and a few nsdgeneral vertices that are NaN in its session 2 (as subjects 6 and 8 of NSD). Surfaces have the real
fsaverage size (163,842 vertices), so a prepared folder loads with the challenge reader.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from nsd.layout import FSAVERAGE_N_VERTICES, HEMISPHERES, ROI_NAMES

TRIALS_PER_SESSION = 20
DESIGN_SESSIONS = 6
N_COLUMNS = 60  # images per subject
N_SHARED = 8
N_IDS = 300  # NSD ids 0..299 in the stimulus file
N_FEATURES = 6
N_MASK = {"lh": 30, "rh": 26}
N_RSC = 4
N_NATIVE = 500  # subject surface vertices
SESSIONS = {1: 6, 2: 5}
NAN_VERTICES = {"lh": [2, 11, 17], "rh": [5, 20]}  # positions among subj02's nsdgeneral vertices, NaN in session 2
BETAS = "nsddata_betas/ppdata/subj{s:02d}/fsaverage/betas_fithrf_GLMdenoise_RR"
VOLUME_BETAS = "nsddata_betas/ppdata/subj{s:02d}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
VOLUME_ROI = "nsddata/ppdata/subj{s:02d}/func1pt8mm/roi"
BRICK = (6, 5, 4)  # the 1.8 mm volume of subj01 (x splits the hemispheres: lh x < 3)


def _mgh(path: Path, values: np.ndarray) -> None:
    """Save per-vertex values (n_vertices,) or (n_vertices, n_frames) as FreeSurfer (.mgh, or .mgz compressed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = values.reshape(values.shape[0], 1, 1, -1) if values.ndim == 2 else values.reshape(-1, 1, 1)
    nib.save(nib.MGHImage(values, np.eye(4)), path)


def _masterordering(rng: np.random.Generator) -> np.ndarray:
    """0-based column per trial: columns shown 3, 2 or 1 times; shared column 0 (3 trials) and 1 (2 trials) only in
    the last 3 sessions, so the challenge's exception for a complete subject keeps column 0 and drops column 1."""
    counts = np.array([3, 2] + list(rng.permutation([3] * 19 + [2] * 19 + [1] * 20)))
    order = rng.permutation(np.repeat(np.arange(N_COLUMNS), counts))
    half = len(order) // 2
    for column in (0, 1):
        for position in np.flatnonzero(order[:half] == column):
            swap = rng.choice(np.flatnonzero(~np.isin(order[half:], (0, 1)))) + half
            order[position], order[swap] = order[swap], order[position]
    return order


def write_raw_nsd(root: Path, seed: int = 0) -> SimpleNamespace:
    """Write the miniature tree under ``root``; return what was planted."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(N_IDS)
    shared = ids[:N_SHARED]
    subjectim = np.stack([np.concatenate([shared, ids[N_SHARED + k * 52 : N_SHARED + (k + 1) * 52]]) for k in range(5)])
    subjectim = np.concatenate([subjectim, subjectim[:3]])  # subjects 6..8 reuse rows (never read here)
    masterordering = _masterordering(rng)
    design = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    design.parent.mkdir(parents=True)
    scipy.io.savemat(
        design,
        {"masterordering": masterordering[None] + 1, "subjectim": subjectim + 1, "sharedix": np.sort(shared)[None] + 1},
    )

    features = rng.standard_normal((N_IDS, N_FEATURES))
    masks, weights, ncsnr = {}, {}, {}
    label_dir = root / "nsddata/freesurfer/fsaverage/label"
    for hemi in HEMISPHERES:
        chosen = np.sort(rng.choice(FSAVERAGE_N_VERTICES, N_MASK[hemi] + N_RSC, replace=False))
        general = np.zeros(FSAVERAGE_N_VERTICES, dtype=np.float32)
        general[chosen[: N_MASK[hemi]]] = 1
        rsc = np.zeros(FSAVERAGE_N_VERTICES, dtype=np.float32)
        rsc[chosen[N_MASK[hemi] :]] = 1
        _mgh(label_dir / f"{hemi}.nsdgeneral.mgz", general)
        _mgh(label_dir / f"{hemi}.nsdgeneralRSC.mgz", rsc)
        masks[hemi] = general > 0
        weights[hemi] = rng.standard_normal((N_FEATURES, FSAVERAGE_N_VERTICES)).astype(np.float32)
        ncsnr[hemi] = rng.uniform(0.3, 2.0, FSAVERAGE_N_VERTICES).astype(np.float32)

    truth = {}
    for subject, n_sessions in SESSIONS.items():
        folder = root / BETAS.format(s=subject)
        trial_ids = subjectim[subject - 1, masterordering]
        for hemi in HEMISPHERES:
            selected = np.flatnonzero(masks[hemi] | _rsc_mask(root, hemi))
            clean = features @ weights[hemi][:, selected]
            clean = (clean - clean.mean(0)) / clean.std(0) * ncsnr[hemi][selected]  # signal sd = ncsnr x noise sd
            truth[(subject, hemi)] = clean
            for session in range(1, n_sessions + 1):
                trials = trial_ids[(session - 1) * TRIALS_PER_SESSION : session * TRIALS_PER_SESSION]
                noisy = clean[trials] + rng.standard_normal((len(trials), selected.size))
                betas = np.zeros((FSAVERAGE_N_VERTICES, len(trials)), dtype=np.float32)
                betas[selected] = (noisy * rng.uniform(0.5, 3.0) + rng.normal(0, 5, selected.size)).T
                if subject == 2 and session == 2:
                    betas[np.flatnonzero(masks[hemi])[NAN_VERTICES[hemi]]] = np.nan
                _mgh(folder / f"{hemi}.betas_session{session:02d}.mgh", betas)
            _mgh(folder / f"{hemi}.ncsnr.mgh", ncsnr[hemi])

    _write_volume(root, rng, subjectim[0, masterordering], features)
    label_names = {roi_class: ["Unknown", *names] for roi_class, names in ROI_NAMES.items()}
    subject_labels = root / "nsddata/freesurfer/subj01/label"
    native = {}
    for hemi in HEMISPHERES:
        index = rng.integers(1, N_NATIVE + 1, FSAVERAGE_N_VERTICES)
        _mgh(root / f"nsddata/ppdata/subj01/transforms/{hemi}.white-to-fsaverage.mgz", index.astype(np.int32))
        for roi_class, names in label_names.items():
            values = rng.integers(0, len(names), N_NATIVE).astype(np.int32)
            _mgh(subject_labels / f"{hemi}.{roi_class}.mgz", values)
            native[(hemi, roi_class)] = values[index - 1]
    for roi_class, names in label_names.items():
        lines = [f"{number} {name} {number * 10} 0 0 0" for number, name in enumerate(names)]
        (subject_labels / f"{roi_class}.mgz.ctab").write_text("\n".join(lines) + "\n")

    stimuli = root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    stimuli.parent.mkdir(parents=True)
    with h5py.File(stimuli, "w") as file:
        brick = file.create_dataset(
            "imgBrick", (N_IDS, 425, 425, 3), dtype=np.uint8, chunks=(1, 425, 425, 3), compression="gzip"
        )
        gradient = np.linspace(0, 200, 425, dtype=np.float32)
        for nsd_id in np.unique(subjectim[:2]):
            image = gradient[:, None, None] + np.array([nsd_id % 50, nsd_id % 7 * 7, nsd_id % 13], np.float32)
            brick[nsd_id] = np.broadcast_to(image, (425, 425, 3)).astype(np.uint8)
    return SimpleNamespace(
        root=root,
        masterordering=masterordering,
        subjectim=subjectim,
        shared=np.sort(shared),
        features=features,
        ncsnr=ncsnr,
        masks=masks,
        truth=truth,
        native_labels=native,
        sessions=SESSIONS,
        betas=BETAS,
        volume_betas=VOLUME_BETAS,
        volume_roi=VOLUME_ROI,
        trials_per_session=TRIALS_PER_SESSION,
        design_sessions=DESIGN_SESSIONS,
        n_shared=N_SHARED,
        nan_vertices=NAN_VERTICES,
        write_mgh=_mgh,
        linked_copy=linked_copy,
    )


def _nifti(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, np.diag([1.8, 1.8, 1.8, 1])), path)


def _write_volume(root: Path, rng: np.random.Generator, trial_ids: np.ndarray, features: np.ndarray) -> None:
    """subj01 in the 1.8 mm volume: per-hemisphere nsdgeneral and ROI volumes, int16 betas (x 300), ncsnr."""
    x = np.indices(BRICK)[0]
    general = (rng.uniform(size=BRICK) < 0.4).astype(np.int16)
    general[0, 0, 0] = -1  # outside the brain, as NSD's volume ROIs mark it
    for hemi, side in (("lh", x < 3), ("rh", x >= 3)):
        _nifti(root / VOLUME_ROI.format(s=1) / f"{hemi}.nsdgeneral.nii.gz", np.where(side, general, 0).astype(np.int16))
        for roi_class, names in ROI_NAMES.items():
            labels = np.where(side, rng.integers(0, len(names) + 1, BRICK), 0).astype(np.int16)
            _nifti(root / VOLUME_ROI.format(s=1) / f"{hemi}.{roi_class}.nii.gz", labels)
    n_voxels = int(np.prod(BRICK))
    ncsnr = rng.uniform(0.3, 2.0, n_voxels)
    clean = features @ rng.standard_normal((N_FEATURES, n_voxels))
    clean = (clean - clean.mean(0)) / clean.std(0) * ncsnr
    folder = root / VOLUME_BETAS.format(s=1)
    _nifti(folder / "ncsnr.nii.gz", ncsnr.reshape(BRICK).astype(np.float32))
    for session in range(1, SESSIONS[1] + 1):
        trials = trial_ids[(session - 1) * TRIALS_PER_SESSION : session * TRIALS_PER_SESSION]
        betas = (clean[trials] + rng.standard_normal((len(trials), n_voxels))) * 2 + rng.normal(0, 3, n_voxels)
        _nifti(
            folder / f"betas_session{session:02d}.nii.gz", np.rint(300 * betas.T.reshape(*BRICK, -1)).astype(np.int16)
        )


def _rsc_mask(root: Path, hemi: str) -> np.ndarray:
    """The RSC label just written (betas cover nsdgeneral and RSC, so either mask can be asked for)."""
    path = root / f"nsddata/freesurfer/fsaverage/label/{hemi}.nsdgeneralRSC.mgz"
    return np.asarray(nib.load(path).dataobj).ravel() > 0


def linked_copy(source: Path, target: Path) -> Path:
    """A copy of a tree whose files are symlinks (cheap); replace a file by unlinking it first."""
    for folder, _, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            (target / relative / name).symlink_to(Path(folder) / name)
    return target


@pytest.fixture(scope="session")
def raw_nsd(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The miniature raw NSD tree (read-only; use `linked_copy` to change a file) and its planted truth."""
    return write_raw_nsd(tmp_path_factory.mktemp("nsd"))
