"""The demo dataset: exact Algonauts 2023 layout, consistent masks, simulated fMRI matching its noise ceiling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
from nilearn import datasets, surface
from PIL import Image
from sklearn.linear_model import RidgeCV

from featurestore.demo_data import make_demo_data
from featurestore.stimuli import AlgonautsImages, open_stimuli

N_TRAIN, N_TEST, N_VERTICES = 60, 30, 400
VERTEX_COUNTS = {"subj01": {"lh": 400, "rh": 440}, "subj02": {"lh": 396, "rh": 436}}  # rh +10%, later subjects -1%
MAPPINGS = {  # the Algonauts 2023 ROI classes and label numbers
    "prf-visualrois": {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "floc-bodies": {0: "Unknown", 1: "EBA", 2: "FBA-1", 3: "FBA-2", 4: "mTL-bodies"},
    "floc-faces": {0: "Unknown", 1: "OFA", 2: "FFA-1", 3: "FFA-2", 4: "mTL-faces", 5: "aTL-faces"},
    "floc-places": {0: "Unknown", 1: "OPA", 2: "PPA", 3: "RSC"},
    "floc-words": {0: "Unknown", 1: "OWFA", 2: "VWFA-1", 3: "VWFA-2", 4: "mfs-words", 5: "mTL-words"},
    "streams": {
        0: "Unknown",
        1: "early",
        2: "midventral",
        3: "midlateral",
        4: "midparietal",
        5: "ventral",
        6: "lateral",
        7: "parietal",
    },
}
IMAGE_NAME = re.compile(r"(train|test)-(\d{4})_nsd-(\d{5})\.png")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_data(
        tmp_path_factory.mktemp("demo") / "data",
        n_subjects=2,
        n_train=N_TRAIN,
        n_test=N_TEST,
        n_vertices=N_VERTICES,
        seed=3,
    )


def image_ids(folder: Path, prefix: str) -> list[int]:
    """NSD ids of an image folder in row order, checking rows run 1..n."""
    parsed = [IMAGE_NAME.fullmatch(p.name) for p in sorted(folder.iterdir())]
    assert all(m and m.group(1) == prefix for m in parsed), sorted(folder.iterdir())
    assert [int(m.group(2)) for m in parsed] == list(range(1, len(parsed) + 1))
    return [int(m.group(3)) for m in parsed]


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0))


def test_layout_file_names_shapes_dtypes(demo: Path):
    expected = {"demo_manifest.json", "demo_truth.json"}
    all_ids = {}
    for subject, counts in VERTEX_COUNTS.items():
        train = image_ids(demo / subject / "training_split/training_images", "train")
        test = image_ids(demo / subject / "test_split/test_images", "test")
        assert len(train) == N_TRAIN and len(test) == N_TEST
        assert all(0 <= i < 73000 for i in train + test) and not set(train) & set(test)
        all_ids[subject] = (set(train), set(test))
        expected |= {
            f"{subject}/training_split/training_images/train-{r:04d}_nsd-{i:05d}.png" for r, i in enumerate(train, 1)
        }
        expected |= {f"{subject}/test_split/test_images/test-{r:04d}_nsd-{i:05d}.png" for r, i in enumerate(test, 1)}
        expected |= {f"{subject}/roi_masks/mapping_{c}.npy" for c in MAPPINGS}
        for hemi, n in counts.items():
            expected |= {
                f"{subject}/training_split/training_fmri/{hemi}_training_fmri.npy",
                f"{subject}/test_split/test_fmri/{hemi}_test_fmri.npy",
                f"{subject}/test_split/noise_ceiling/{hemi}_noise_ceiling.npy",
                f"{subject}/roi_masks/{hemi}.all-vertices_fsaverage_space.npy",
            }
            expected |= {
                f"{subject}/roi_masks/{hemi}.{c}_{space}_space.npy"
                for c in MAPPINGS
                for space in ("challenge", "fsaverage")
            }
            expected |= {f"demo_truth/{subject}/{hemi}_{kind}.npy" for kind in ("training_signal", "test_signal")}
            fmri = np.load(demo / subject / f"training_split/training_fmri/{hemi}_training_fmri.npy")
            assert fmri.dtype == np.float32 and fmri.shape == (N_TRAIN, n)
            noise_ceiling = np.load(demo / subject / f"test_split/noise_ceiling/{hemi}_noise_ceiling.npy")
            assert noise_ceiling.dtype == np.float32 and noise_ceiling.shape == (n,)
            assert ((noise_ceiling > 0) & (noise_ceiling < 1)).all()  # a fraction, as the challenge's
            test_fmri = np.load(demo / subject / f"test_split/test_fmri/{hemi}_test_fmri.npy")
            assert test_fmri.dtype == np.float32 and test_fmri.shape == (N_TEST, n)
            for kind, rows in (("training_signal", N_TRAIN), ("test_signal", N_TEST)):
                truth = np.load(demo / f"demo_truth/{subject}/{hemi}_{kind}.npy")
                assert truth.dtype == np.float32 and truth.shape == (rows, n)
    assert {p.relative_to(demo).as_posix() for p in demo.rglob("*") if p.is_file()} == expected
    (train1, test1), (train2, test2) = all_ids.values()
    assert len(train1 & train2) == 30 and len(test1 & test2) == 15  # shared_fraction=0.5
    assert not (train1 | train2) & (test1 | test2)
    for path in demo.glob("subj*/*/*_images/*.png"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (425, 425))
    truth = json.loads((demo / "demo_truth.json").read_text())
    assert truth["params"]["n_train"] == N_TRAIN and truth["subjects"]["subj02"]["rh"]["n_vertices"] == 436


def test_roi_masks_consistent(demo: Path):
    for subject, counts in VERTEX_COUNTS.items():
        for roi_class, mapping in MAPPINGS.items():
            loaded = np.load(demo / subject / f"roi_masks/mapping_{roi_class}.npy", allow_pickle=True).item()
            assert loaded == mapping and all(type(k) is int for k in loaded)
        for hemi, n in counts.items():
            all_vertices = np.load(demo / subject / f"roi_masks/{hemi}.all-vertices_fsaverage_space.npy")
            assert all_vertices.shape == (163842,) and set(np.unique(all_vertices)) == {0, 1}
            assert all_vertices.sum() == n and not all_vertices[10242:].any()  # within fsaverage5
            inside = all_vertices == 1
            for roi_class, mapping in MAPPINGS.items():
                challenge = np.load(demo / subject / f"roi_masks/{hemi}.{roi_class}_challenge_space.npy")
                fsaverage = np.load(demo / subject / f"roi_masks/{hemi}.{roi_class}_fsaverage_space.npy")
                assert challenge.shape == (n,) and fsaverage.shape == (163842,)
                assert np.issubdtype(challenge.dtype, np.integer) and np.issubdtype(fsaverage.dtype, np.integer)
                np.testing.assert_array_equal(challenge, fsaverage[inside])
                assert not fsaverage[~inside].any()
                assert set(np.unique(challenge)) <= set(mapping) and challenge.any()


@pytest.mark.parametrize("hemi", ["lh", "rh"])
def test_vertices_are_occipital_and_rois_contiguous(demo: Path, hemi: str):
    meshes = datasets.fetch_surf_fsaverage("fsaverage5")
    pial = surface.load_surf_mesh(meshes[f"pial_{'left' if hemi == 'lh' else 'right'}"])
    coordinates, faces = np.asarray(pial.coordinates), np.asarray(pial.faces)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adjacency = scipy.sparse.coo_matrix((np.ones(len(edges)), edges.T), shape=(10242, 10242)).tocsr()
    inside = np.load(demo / f"subj01/roi_masks/{hemi}.all-vertices_fsaverage_space.npy")[:10242] == 1
    assert coordinates[inside, 1].max() < np.percentile(coordinates[:, 1], 25)  # posterior quarter (y = anterior)

    def n_components(mask: np.ndarray) -> int:
        return scipy.sparse.csgraph.connected_components(adjacency[mask][:, mask], directed=False)[0]

    assert n_components(inside) == 1
    for roi_class, mapping in MAPPINGS.items():
        labels = np.load(demo / f"subj01/roi_masks/{hemi}.{roi_class}_fsaverage_space.npy")[:10242]
        for label in set(np.unique(labels)) - {0}:
            assert n_components(labels == label) == 1, (roi_class, mapping[label])


def test_fmri_matches_noise_ceiling(demo: Path):
    for subject, counts in VERTEX_COUNTS.items():
        for hemi in counts:
            fmri = np.load(demo / subject / f"training_split/training_fmri/{hemi}_training_fmri.npy")
            signal = np.load(demo / f"demo_truth/{subject}/{hemi}_training_signal.npy")
            noise_ceiling = np.load(demo / subject / f"test_split/noise_ceiling/{hemi}_noise_ceiling.npy")
            # the analytic ceiling is the signal's share of variance, with noise SD 1 (the default)
            np.testing.assert_allclose(noise_ceiling, signal.var(0) / (signal.var(0) + 1.0), rtol=1e-4)
            assert abs((fmri - signal).var(0).mean() - 1.0) < 0.05
            r = pearson(fmri, signal)
            expected = np.sqrt(noise_ceiling)  # corr(signal + noise, signal) = sqrt(var share)
            assert abs(r.mean() - expected.mean()) < 0.03
            assert np.corrcoef(r, expected)[0, 1] > 0.8
            test_fmri = np.load(demo / subject / f"test_split/test_fmri/{hemi}_test_fmri.npy")
            test_signal = np.load(demo / f"demo_truth/{subject}/{hemi}_test_signal.npy")
            assert abs(pearson(test_fmri, test_signal).mean() - expected.mean()) < 0.05


def pixel_features(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per image: local 8x8 colour deviations from the image mean, and five global statistics."""
    local, global_ = [], []
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((64, 64), Image.BOX), dtype=np.float64) / 255
        coarse = pixels.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))
        local.append((coarse - coarse.mean(axis=(0, 1))).ravel())
        luminance = pixels @ [0.299, 0.587, 0.114]
        gradient = np.hypot(*np.gradient(luminance))
        global_.append(
            [
                luminance.mean(),
                luminance.std(),
                np.ptp(pixels, axis=2).mean(),
                gradient.mean(),
                (pixels[..., 0] - pixels[..., 1]).mean(),
            ]
        )
    return np.array(local), np.array(global_)


def test_early_rois_follow_local_pixels_and_higher_rois_global_statistics(demo: Path):
    train_local, train_global = pixel_features(demo / "subj01/training_split/training_images")
    test_local, test_global = pixel_features(demo / "subj01/test_split/test_images")
    for hemi in ("lh", "rh"):
        signal = np.load(demo / f"demo_truth/subj01/{hemi}_training_signal.npy")
        test_signal = np.load(demo / f"demo_truth/subj01/{hemi}_test_signal.npy")
        streams = np.load(demo / f"subj01/roi_masks/{hemi}.streams_challenge_space.npy")
        early, higher = streams == 1, streams >= 5  # early vs ventral, lateral, parietal
        scores = {}
        for name, (train_x, test_x) in {
            "local": (train_local, test_local),
            "global": (train_global, test_global),
        }.items():
            model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(train_x, signal)
            r = pearson(model.predict(test_x), test_signal)
            scores[name] = np.median(r[early]), np.median(r[higher])
        assert scores["local"][0] > scores["local"][1] + 0.15, scores
        assert scores["global"][1] > scores["global"][0] + 0.15, scores


def test_stimulus_source_reads_demo(demo: Path):
    source = open_stimuli(demo)
    assert isinstance(source, AlgonautsImages) and source.subjects == ("subj01", "subj02")
    ids = set()
    for path in demo.glob("subj*/*/*_images/*.png"):
        ids.add(int(IMAGE_NAME.fullmatch(path.name).group(3)))
    np.testing.assert_array_equal(source.ids, sorted(ids))
    assert source.verify_shared() == 45  # shared images are byte-identical across subjects
    assert source.load(int(source.ids[0])).size == (425, 425)


def tiny(out: Path, **overrides) -> Path:
    return make_demo_data(out, **{"n_subjects": 1, "n_train": 6, "n_test": 3, "n_vertices": 120, **overrides})


def test_idempotent_rebuilds_damaged_or_changed(tmp_path: Path):
    out = tiny(tmp_path / "demo")
    fmri_path = out / "subj01/training_split/training_fmri/lh_training_fmri.npy"
    first_fmri = fmri_path.read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert tiny(tmp_path / "demo") == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps  # reused, nothing rewritten
    image = next((out / "subj01/test_split/test_images").iterdir())
    image.unlink()
    tiny(tmp_path / "demo")
    assert image.exists() and fmri_path.read_bytes() == first_fmri  # rebuilt, same seed -> same data
    fmri_path.write_bytes(first_fmri[:100])  # truncated
    tiny(tmp_path / "demo")
    assert fmri_path.read_bytes() == first_fmri
    tiny(tmp_path / "demo", noise_sd=0.5)
    assert json.loads((out / "demo_manifest.json").read_text())["params"]["noise_sd"] == 0.5
    assert fmri_path.read_bytes() != first_fmri
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no staging folders left behind


def test_noiseless_and_deterministic(tmp_path: Path):
    out = tiny(tmp_path / "a", noise_sd=0.0, seed=7)
    for hemi in ("lh", "rh"):
        np.testing.assert_array_equal(
            np.load(out / f"subj01/training_split/training_fmri/{hemi}_training_fmri.npy"),
            np.load(out / f"demo_truth/subj01/{hemi}_training_signal.npy"),
        )
        np.testing.assert_array_equal(np.load(out / f"subj01/test_split/noise_ceiling/{hemi}_noise_ceiling.npy"), 1.0)
    again = tiny(tmp_path / "b", noise_sd=0.0, seed=7)
    manifest_a = json.loads((out / "demo_manifest.json").read_text())["files"]
    for relative in manifest_a:
        assert (out / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_refuses_foreign_folder_and_bad_parameters(tmp_path: Path):
    foreign = tmp_path / "algonauts"
    (foreign / "subj01").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="is not a demo dataset"):
        tiny(foreign)
    assert (foreign / "subj01").is_dir()
    with pytest.raises(ValueError, match="n_train must be at least 2"):
        tiny(tmp_path / "x", n_train=0)
    with pytest.raises(ValueError, match=r"shared_fraction must be in \[0, 1\]"):
        tiny(tmp_path / "x", shared_fraction=1.5)
    with pytest.raises(ValueError, match="fsaverage5"):
        tiny(tmp_path / "x", n_vertices=9400)
