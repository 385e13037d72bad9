"""The design's 1-based MATLAB indices come back 0-based, and a broken .mat is named."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.io

from nsd.expdesign import load_expdesign
from nsd.tree import RawNsdError


def test_zero_based_ids_per_trial(raw_nsd):
    design = load_expdesign(raw_nsd.root)
    mat = scipy.io.loadmat(raw_nsd.root / "nsddata/experiments/nsd/nsd_expdesign.mat")
    trials = np.arange(design.n_trials)
    # trial t of subject s: subjectim[s, masterordering[t]], both 1-based in the file
    expected = mat["subjectim"][1, mat["masterordering"][0] - 1] - 1
    np.testing.assert_array_equal(design.trial_ids(2, trials), expected)
    np.testing.assert_array_equal(design.shared, np.sort(mat["sharedix"].ravel() - 1))
    with pytest.raises(RawNsdError, match=r"masterordering has 120 trials but trial 121 was asked for"):
        design.trial_ids(1, [120])


def test_zero_index_is_refused(raw_nsd, tmp_path):
    mat = scipy.io.loadmat(raw_nsd.root / "nsddata/experiments/nsd/nsd_expdesign.mat")
    path = tmp_path / "nsddata/experiments/nsd/nsd_expdesign.mat"
    path.parent.mkdir(parents=True)
    scipy.io.savemat(path, {"masterordering": mat["masterordering"] - 1, "subjectim": mat["subjectim"]})
    with pytest.raises(RawNsdError, match=re.escape(f"{path}: masterordering has values below 1 (0)")):
        load_expdesign(tmp_path)
