"""The NSD hdf5 source by subject: the ids come from the expdesign of the NSD tree that holds the file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from featurestore.stimuli import StimulusError, open_stimuli


def _tree(root: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """An NSD tree with a design (1-based, subjects seeing 5 images each) and an hdf5 of 40 blank images."""
    rng = np.random.default_rng(0)
    subjectim = rng.permutation(40)[:40].reshape(8, 5)  # 0-based ids
    masterordering = rng.integers(0, 5, 30)
    masterordering[:5] = np.arange(5)  # every column shown
    design = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    design.parent.mkdir(parents=True)
    scipy.io.savemat(design, {"masterordering": masterordering[None] + 1, "subjectim": subjectim + 1})
    path = root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as file:
        file.create_dataset("imgBrick", (40, 425, 425, 3), dtype=np.uint8, chunks=(1, 425, 425, 3))
    return path, subjectim, masterordering


def test_subjects_select_their_images(tmp_path):
    path, subjectim, _ = _tree(tmp_path)
    assert len(open_stimuli(path)) == 40
    source = open_stimuli(path, subjects=[1, "subj03"])
    np.testing.assert_array_equal(source.ids, np.sort(np.concatenate([subjectim[0], subjectim[2]])))
    np.testing.assert_array_equal(open_stimuli(path, subjects=2).ids, np.sort(subjectim[1]))


def test_subjects_need_the_design_and_an_nsd_subject(tmp_path):
    path, _, _ = _tree(tmp_path)
    with pytest.raises(StimulusError, match=r"Unknown NSD subject=9; NSD has subjects 1\.\.8"):
        open_stimuli(path, subjects=[9])
    (tmp_path / "nsddata/experiments/nsd/nsd_expdesign.mat").unlink()
    with pytest.raises(StimulusError, match=r"Missing file .*nsd_expdesign\.mat"):
        open_stimuli(path, subjects=[1])
