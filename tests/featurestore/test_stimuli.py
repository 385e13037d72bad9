"""Stimulus sources: Algonauts folders, NSD hdf5, plain folders; ids, pixels, errors, pickling."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from featurestore.stimuli import (
    AlgonautsImages,
    ImageFolder,
    NSDHdf5,
    StimulusError,
    open_stimuli,
)

ASTRONAUT = skdata.astronaut()  # (512, 512, 3) uint8, shipped with scikit-image


def photo(key: int, size: int = 24) -> np.ndarray:
    """A distinct small RGB crop of a real photograph for each key."""
    y, x = divmod(key * 37 % 400, 20)
    return np.ascontiguousarray(ASTRONAUT[y * 20 : y * 20 + size, x * 20 : x * 20 + size])


def write_png(path: Path, pixels: np.ndarray, compress_level: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, compress_level=compress_level)
    return path


def write_subject(root: Path, subject: str, train: list[int], test: list[int], compress_level: int = 6) -> Path:
    """An Algonauts-style subject folder whose image for NSD id i is photo(i)."""
    folder = root / subject
    for row, nsd_id in enumerate(train, start=1):
        write_png(
            folder / "training_split/training_images" / f"train-{row:04d}_nsd-{nsd_id:05d}.png",
            photo(nsd_id),
            compress_level,
        )
    for row, nsd_id in enumerate(test, start=1):
        write_png(
            folder / "test_split/test_images" / f"test-{row:04d}_nsd-{nsd_id:05d}.png", photo(nsd_id), compress_level
        )
    return folder


@pytest.fixture
def two_subjects(tmp_path: Path) -> Path:
    """subj01 and subj02 sharing ids 13 (identical bytes) and 845 (same pixels, different PNG bytes)."""
    write_subject(tmp_path, "subj01", train=[13, 27, 46], test=[845], compress_level=6)
    write_subject(tmp_path, "subj02", train=[13, 99], test=[500], compress_level=6)
    recoded = write_png(tmp_path / "subj02/test_split/test_images/test-0002_nsd-00845.png", photo(845), 1)
    assert recoded.read_bytes() != (tmp_path / "subj01/test_split/test_images/test-0001_nsd-00845.png").read_bytes()
    return tmp_path


def test_algonauts_union_deduplicates_shared_ids(two_subjects: Path):
    source = AlgonautsImages(two_subjects)
    assert source.subjects == ("subj01", "subj02")
    assert source.ids.dtype == np.int64
    np.testing.assert_array_equal(source.ids, [13, 27, 46, 99, 500, 845])
    assert len(source) == 6
    assert [p.parent.parent.parent.name for p in source.files[13]] == ["subj01", "subj02"]
    assert len(source.files[845]) == 2 and len(source.files[27]) == 1
    for nsd_id, image in source:  # each id's pixels are the photo written under that id's file name
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), photo(nsd_id))
    assert source.verify_shared() == 2
    assert "subj02" in source.describe(845) and "subj01" in source.describe(845)
    assert source.describe(27).endswith("subj01/training_split/training_images/train-0002_nsd-00027.png")


def test_algonauts_subject_selection(two_subjects: Path):
    np.testing.assert_array_equal(AlgonautsImages(two_subjects, subjects=np.int64(1)).ids, [13, 27, 46, 845])
    np.testing.assert_array_equal(AlgonautsImages(two_subjects, subjects="subj02").ids, [13, 99, 500, 845])
    both = AlgonautsImages(two_subjects, subjects=["subj02", 1])
    assert both.subjects == ("subj02", "subj01")
    single = AlgonautsImages(two_subjects / "subj02")
    assert single.subjects == ("subj02",)
    np.testing.assert_array_equal(single.ids, [13, 99, 500, 845])
    with pytest.raises(StimulusError, match=r"subj03.*found \['subj01', 'subj02'\]"):
        AlgonautsImages(two_subjects, subjects=[3])


def test_algonauts_conflicting_pixels_name_both_files(two_subjects: Path):
    other = photo(13).copy()
    other[0, 0] ^= 1  # one pixel differs
    conflicting = write_png(two_subjects / "subj02/training_split/training_images/train-0001_nsd-00013.png", other)
    source = AlgonautsImages(two_subjects)
    original = two_subjects / "subj01/training_split/training_images/train-0001_nsd-00013.png"
    with pytest.raises(StimulusError, match="NSD id 13") as info:
        source.load(13)
    assert str(original) in str(info.value) and str(conflicting) in str(info.value)
    with pytest.raises(StimulusError, match="different pixels"):
        source.verify_shared()
    np.testing.assert_array_equal(np.asarray(source.load(845)), photo(845))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_algonauts_corrupt_image_names_the_file(two_subjects: Path, damage: str):
    path = two_subjects / "subj01/training_split/training_images/train-0002_nsd-00027.png"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"not a png at all")
    source = AlgonautsImages(two_subjects)
    with pytest.raises(StimulusError, match="cannot read image") as info:
        source.load(27)
    assert str(path) in str(info.value)


def test_algonauts_bad_file_name_is_an_error(two_subjects: Path):
    bad = write_png(two_subjects / "subj01/training_split/training_images/image_7.png", photo(7))
    with pytest.raises(StimulusError, match=r"train-0001_nsd-00013\.png") as info:
        AlgonautsImages(two_subjects)
    assert str(bad) in str(info.value)
    bad.unlink()
    (two_subjects / "subj01/training_split/training_images/.DS_Store").write_bytes(b"\0")  # hidden files skipped
    assert 27 in AlgonautsImages(two_subjects)


def test_algonauts_split_mismatch_and_missing_folders(two_subjects: Path, tmp_path_factory):
    misplaced = write_png(two_subjects / "subj01/test_split/test_images/train-0009_nsd-00777.png", photo(777))
    with pytest.raises(StimulusError, match="named as a train image but lies in test_images") as info:
        AlgonautsImages(two_subjects)
    assert str(misplaced) in str(info.value)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(StimulusError, match="not an Algonauts 2023 data dir"):
        AlgonautsImages(empty)
    (empty / "subj01").mkdir()
    with pytest.raises(StimulusError, match="neither training_split"):
        AlgonautsImages(empty)


def test_unknown_id(two_subjects: Path):
    source = AlgonautsImages(two_subjects)
    with pytest.raises(StimulusError, match=r"NSD id 14 is not in AlgonautsImages.*6 ids in 13\.\.845"):
        source.load(14)
    assert 14 not in source and 13 in source


def test_sources_pickle(two_subjects: Path):
    source = AlgonautsImages(two_subjects, subjects=[1, 2])
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone.ids, source.ids)
    np.testing.assert_array_equal(np.asarray(clone.load(99)), photo(99))


@pytest.fixture
def nsd_hdf5(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 4-image stimulus file laid out like nsd_stimuli.hdf5."""
    brick = np.stack([np.asarray(Image.fromarray(photo(k, 64)).resize((425, 425))) for k in range(4)])
    path = tmp_path / "nsd_stimuli.hdf5"
    with h5py.File(path, "w") as file:
        file.create_dataset("imgBrick", data=brick, chunks=(1, 425, 425, 3))
    return path, brick


def test_hdf5_round_trip(nsd_hdf5):
    path, brick = nsd_hdf5
    source = open_stimuli(path)
    assert isinstance(source, NSDHdf5)
    np.testing.assert_array_equal(source.ids, np.arange(4))
    for nsd_id, image in source:
        assert image.mode == "RGB" and image.size == (425, 425)
        np.testing.assert_array_equal(np.asarray(image), brick[nsd_id])
    assert source.describe(2) == f"{path}[imgBrick][2]"
    subset = NSDHdf5(path, ids=[3, 1, 3])
    np.testing.assert_array_equal(subset.ids, [1, 3])
    with pytest.raises(StimulusError, match="NSD id 2 is not in"):
        subset.load(2)
    with pytest.raises(StimulusError, match=r"ids \[4\] are outside .*0\.\.3"):
        NSDHdf5(path, ids=[0, 4])
    source.close()


def test_hdf5_source_loads_in_spawned_process(nsd_hdf5):
    path, brick = nsd_hdf5
    source = NSDHdf5(path)
    source.load(0)  # the parent now holds an open h5py handle, which must not travel
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        image = pool.submit(source.load, 3).result(timeout=120)
    np.testing.assert_array_equal(np.asarray(image), brick[3])


@pytest.mark.parametrize(
    ("shape", "dtype", "got"),
    [
        ((2, 64, 64, 3), np.uint8, r"got shape \(2, 64, 64, 3\) and dtype uint8"),
        ((2, 425, 425, 3), np.float32, r"got shape \(2, 425, 425, 3\) and dtype float32"),
        ((425, 425, 3), np.uint8, r"got shape \(425, 425, 3\)"),
    ],
)
def test_hdf5_wrong_layout(tmp_path: Path, shape, dtype, got):
    path = tmp_path / "stimuli.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("imgBrick", shape=shape, dtype=dtype)
    with pytest.raises(StimulusError, match=r"should have shape \(N, 425, 425, 3\) and dtype uint8; " + got) as info:
        NSDHdf5(path)
    assert f"{path}[imgBrick]" in str(info.value)


def test_hdf5_missing_dataset_and_bad_file(tmp_path: Path):
    path = tmp_path / "stimuli.hdf5"
    with h5py.File(path, "w") as file:
        file.create_dataset("images", shape=(1, 425, 425, 3), dtype=np.uint8)
    with pytest.raises(StimulusError, match=r"has no dataset 'imgBrick'; it holds \['images'\]"):
        NSDHdf5(path)
    assert NSDHdf5(path, dataset="images").ids.tolist() == [0]
    not_hdf5 = tmp_path / "fake.hdf5"
    not_hdf5.write_bytes(b"plain text")
    with pytest.raises(StimulusError, match=r"cannot open hdf5 file .*fake\.hdf5"):
        NSDHdf5(not_hdf5)


@pytest.fixture
def plain_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_png(folder / "a.png", photo(1))
    write_png(folder / "nested/b.png", photo(2))
    write_png(folder / "unused.png", photo(3))
    return folder


def test_folder_with_dict_and_csv(plain_folder: Path, tmp_path: Path):
    from_dict = open_stimuli(plain_folder, id_map={"nested/b.png": 7, "a.png": 70000})
    csv_path = tmp_path / "ids.csv"
    csv_path.write_text("filename,nsd_id,comment\na.png,70000,first\nnested/b.png, 7 ,second\n")
    from_csv = ImageFolder(plain_folder, csv_path)
    for source in (from_dict, from_csv):
        assert isinstance(source, ImageFolder)
        np.testing.assert_array_equal(source.ids, [7, 70000])
        np.testing.assert_array_equal(np.asarray(source.load(70000)), photo(1))
        np.testing.assert_array_equal(np.asarray(source.load(7)), photo(2))
        assert source.describe(7) == str(plain_folder / "nested/b.png")
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(from_csv)).ids, [7, 70000])


def test_folder_errors(plain_folder: Path, tmp_path: Path):
    with pytest.raises(StimulusError, match=r"1 file\(s\) missing .*'c.png'"):
        ImageFolder(plain_folder, {"a.png": 1, "c.png": 2})
    with pytest.raises(StimulusError, match=r"NSD id 5 is given to two files, 'a.png' and 'unused.png'"):
        ImageFolder(plain_folder, {"a.png": 5, "unused.png": 5})
    with pytest.raises(StimulusError, match="non-negative integer"):
        ImageFolder(plain_folder, {"a.png": -1})
    bad_columns = tmp_path / "bad_columns.csv"
    bad_columns.write_text("file,id\na.png,1\n")
    with pytest.raises(StimulusError, match=r"must have columns filename,nsd_id; got \['file', 'id'\]"):
        ImageFolder(plain_folder, bad_columns)
    bad_id = tmp_path / "bad_id.csv"
    bad_id.write_text("filename,nsd_id\na.png,1\nunused.png,x7\n")
    with pytest.raises(StimulusError, match=r"bad_id.csv line 3: nsd_id 'x7' is not an integer"):
        ImageFolder(plain_folder, bad_id)
    twice = tmp_path / "twice.csv"
    twice.write_text("filename,nsd_id\na.png,1\na.png,2\n")
    with pytest.raises(StimulusError, match=r"'a\.png' is listed twice"):
        ImageFolder(plain_folder, twice)


def test_open_stimuli_guesses_kind(two_subjects: Path, plain_folder: Path, tmp_path: Path):
    assert isinstance(open_stimuli(two_subjects), AlgonautsImages)
    assert open_stimuli(two_subjects / "subj01").subjects == ("subj01",)
    assert open_stimuli(two_subjects, subjects=[2]).subjects == ("subj02",)
    source = AlgonautsImages(two_subjects)
    assert open_stimuli(source) is source
    with pytest.raises(StimulusError, match=r"cannot tell what .* holds.*id_map="):
        open_stimuli(plain_folder)
    with pytest.raises(StimulusError, match="no such stimulus file or folder"):
        open_stimuli(tmp_path / "missing")
    with pytest.raises(StimulusError, match="subjects= applies only to Algonauts folders"):
        open_stimuli(plain_folder, subjects=[1], id_map={"a.png": 1})
