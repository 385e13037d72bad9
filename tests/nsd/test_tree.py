"""The raw tree's paths: subjects and sessions present, and what counts as a raw NSD root."""

from __future__ import annotations

import re

import pytest

from nsd.tree import RawNsdError, is_raw_nsd, list_nsd_subjects, session_files


def test_subjects_and_sessions_present(raw_nsd, tmp_path):
    assert is_raw_nsd(raw_nsd.root) and not is_raw_nsd(tmp_path)
    assert list_nsd_subjects(raw_nsd.root) == [1, 2]
    assert list_nsd_subjects(raw_nsd.root, "func1pt8mm") == [1]
    assert session_files(raw_nsd.root, 1, "fsaverage") == [1, 2, 3, 4, 5, 6]
    assert session_files(raw_nsd.root, 2, "fsaverage") == [1, 2, 3, 4, 5]
    with pytest.raises(RawNsdError, match=r"No subject has betas in .*subjXX/fsaverage"):
        list_nsd_subjects(tmp_path)
    with pytest.raises(RawNsdError, match=re.escape("Unknown space='func1mm'; expected one of")):
        session_files(raw_nsd.root, 1, "func1mm")
