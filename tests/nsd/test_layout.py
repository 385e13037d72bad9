"""The Algonauts 2023 layout's names: image file names and subject forms, each parsed one way everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nsd.layout import LayoutError, parse_image_name, subject_folder_name, subject_number


def test_parse_image_name_good():
    assert parse_image_name("train-0001_nsd-00013.png") == ("train", 1, 13)
    assert parse_image_name("test-0001_nsd-00845.png") == ("test", 1, 845)
    assert parse_image_name(Path("/data/subj01/x/train-9841_nsd-72999.png")) == ("train", 9841, 72999)
    assert parse_image_name("train-10000_nsd-00000.png") == ("train", 10000, 0)


@pytest.mark.parametrize(
    "name",
    [
        "train-0001_nsd-0013.png",  # 4-digit id
        "train-0001-nsd-00013.png",
        "train-0001_nsd-00013.jpg",
        "val-0001_nsd-00013.png",
        "train-001_nsd-00013.png",
        "Train-0001_nsd-00013.png",
        "train-0001_nsd-00013.png.bak",
    ],
)
def test_parse_image_name_bad(name):
    with pytest.raises(LayoutError, match=r"train-0001_nsd-00013\.png") as info:
        parse_image_name(f"/some/dir/{name}")
    assert f"/some/dir/{name}" in str(info.value)


def test_parse_image_name_out_of_range():
    with pytest.raises(LayoutError, match="rows are 1-based"):
        parse_image_name("train-0000_nsd-00013.png")
    with pytest.raises(LayoutError, match=r"0\.\.72999"):
        parse_image_name("test-0001_nsd-73000.png")


@pytest.mark.parametrize(
    ("given", "number"),
    [
        (2, 2),
        (np.int64(2), 2),
        (np.uint8(2), 2),
        ("2", 2),
        ("02", 2),
        ("subj02", 2),
        ("subj2", 2),
        (1, 1),
        (99, 99),
        ("subj99", 99),
    ],
)
def test_subject_number_forms(given, number):
    assert subject_number(given) == number
    assert subject_folder_name(given) == f"subj{number:02d}"


@pytest.mark.parametrize(
    "given", [True, np.bool_(True), 0, -1, 100, 2.0, None, "0", "subj00", "100", "002", "SUBJ02", " 2", "alice"]
)
def test_subject_number_refuses(given):
    message = f"Unknown subject={given!r}; expected a number 1..99 as an int, '1', '01' or 'subj01'"
    with pytest.raises(LayoutError, match=re.escape(message)):
        subject_number(given)
    with pytest.raises(LayoutError, match=re.escape(message)):
        subject_folder_name(given)
