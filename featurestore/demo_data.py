"""A small Algonauts 2023 dataset built offline: real sample photos and simulated fMRI with a known noise ceiling.

The folder has the exact challenge layout (see :func:`make_demo_data`), so every loader, extractor and
encoder runs on it unchanged; the simulation's ground truth lets tests check that scores match it.

One module (about 580 lines) for one generator: the cortical geometry (ROIs on the fsaverage5 occipital cap),
the image features and the fMRI simulation are written together, so that a reader can check the planted truth
against the files in one place.
"""

from __future__ import annotations

import concurrent.futures
import functools
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
from PIL import Image

from featurestore.errors import InvalidParameterError
from nsd.layout import (
    FSAVERAGE5_N_VERTICES,
    FSAVERAGE_N_VERTICES,
    HEMISPHERES,
    N_NSD_IMAGES,
    ROI_NAMES,
)

__all__ = ["make_demo_data"]

GENERATOR_VERSION = 2  # 2: test fMRI and the fraction-unit noise ceiling in test_split/, as the challenge data
IMAGE_SIZE = 425
MANIFEST_FILE = "demo_manifest.json"
TRUTH_FILE = "demo_truth.json"
TRUTH_FOLDER = "demo_truth"

# Category-selective patches on the occipital cap: centre (distance from the occipital pole as a fraction of
# the cap radius, angle in degrees: 0 lateral, 90 dorsal, -90 ventral, 180 medial) and radius (cap fraction).
FLOC_PATCHES: dict[str, tuple[float, float, float]] = {
    "EBA": (0.58, 15, 0.14),
    "FBA-1": (0.68, -55, 0.1),
    "FBA-2": (0.84, -55, 0.1),
    "mTL-bodies": (0.92, -100, 0.09),
    "OFA": (0.52, -15, 0.13),
    "FFA-1": (0.66, -75, 0.12),
    "FFA-2": (0.82, -80, 0.1),
    "mTL-faces": (0.9, -120, 0.09),
    "aTL-faces": (0.95, -60, 0.08),
    "OPA": (0.58, 75, 0.14),
    "PPA": (0.74, -125, 0.13),
    "RSC": (0.72, 160, 0.12),
    "OWFA": (0.55, -40, 0.1),
    "VWFA-1": (0.7, -45, 0.1),
    "VWFA-2": (0.84, -40, 0.09),
    "mfs-words": (0.88, -95, 0.08),
    "mTL-words": (0.95, -135, 0.08),
}
FLOC_DROP_PROBABILITY = 0.2  # chance that a (non-first) category patch is absent from a hemisphere, as in real data
PRF_RINGS = (0.2, 0.32, 0.42)  # outer radii of V1, V2, V3 (cap fractions); hV4 lies ventrally just beyond V3
STREAM_RINGS = (0.42, 0.65, 0.97)  # outer radii of early, mid-, and high-level streams
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
GRID = 16  # local feature maps are GRID x GRID
LOCAL_CHANNELS = ("luminance", "red-green", "blue-yellow", "edge energy")
GLOBAL_FEATURES = (
    "mean luminance",
    "luminance contrast",
    "saturation",
    "mean red-green",
    "mean blue-yellow",
    "edge energy",
    "central edge energy",
    "top-bottom luminance",
    "horizontal-vertical gradient energy",
    "fine/coarse edge ratio",
)


@functools.lru_cache(maxsize=1)
def _sample_photos() -> dict[str, np.ndarray]:
    """The photographs shipped with scikit-image and scikit-learn, as read-only RGB arrays."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    photos = {
        "astronaut": data.astronaut(),
        "camera": np.repeat(data.camera()[..., None], 3, axis=2),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
        "hubble_deep_field": data.hubble_deep_field(),
        "china": china,
        "flower": flower,
    }
    for photo in photos.values():
        photo.flags.writeable = False
    return photos


def _make_image(photos: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A random square crop of a random photo, maybe mirrored, colour-jittered, at 425 x 425; (photo name, pixels)."""
    which = sorted(photos)[int(rng.integers(len(photos)))]
    photo = photos[which]
    height, width = photo.shape[:2]
    side = int(rng.uniform(0.35, 1.0) * min(height, width))
    top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
    crop = photo[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    resized = Image.fromarray(np.ascontiguousarray(crop)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    image = np.asarray(resized, dtype=np.float32) / 255
    gray = (image @ LUMA)[..., None]
    image = gray + rng.uniform(0.6, 1.4) * (image - gray)  # saturation
    image = image * rng.uniform(0.92, 1.08, size=3).astype(np.float32)  # tint
    image = image.mean() + rng.uniform(0.7, 1.3) * (image - image.mean())  # contrast
    image = image * rng.uniform(0.75, 1.25)  # brightness
    return which, (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _image_features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local maps (LOCAL_CHANNELS, GRID, GRID) and GLOBAL_FEATURES of one image, all computed from its pixels."""
    small = np.asarray(Image.fromarray(image).resize((4 * GRID, 4 * GRID), Image.BOX), dtype=np.float32) / 255
    red, green, blue = small[..., 0], small[..., 1], small[..., 2]
    luminance = small @ LUMA
    grad_y, grad_x = np.gradient(luminance)
    edges = np.hypot(grad_x, grad_y)
    maps = np.stack([luminance, red - green, blue - (red + green) / 2, edges])
    local = maps.reshape(len(LOCAL_CHANNELS), GRID, 4, GRID, 4).mean(axis=(2, 4))
    local -= local.mean(axis=(1, 2), keepdims=True)  # local deviations only: the image-wide part is global
    coarse_edges = np.hypot(*np.gradient(local[0])).mean()
    centre = slice(GRID, 3 * GRID)
    global_ = np.array(
        [
            luminance.mean(),
            luminance.std(),
            (small.max(-1) - small.min(-1)).mean(),
            maps[1].mean(),
            maps[2].mean(),
            edges.mean(),
            edges[centre, centre].mean() - edges.mean(),
            luminance[: 2 * GRID].mean() - luminance[2 * GRID :].mean(),
            (grad_x**2).mean() - (grad_y**2).mean(),
            edges.mean() / (coarse_edges + 1e-3),
        ],
        dtype=np.float32,
    )
    return local.astype(np.float32), global_


@functools.lru_cache(maxsize=2)
def _fsaverage5(hemi: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pial and spherical vertex coordinates and the triangles of one fsaverage5 hemisphere (shipped with nilearn)."""
    from nilearn import datasets, surface

    meshes = datasets.fetch_surf_fsaverage("fsaverage5")
    side = "left" if hemi == "lh" else "right"
    pial = surface.load_surf_mesh(meshes[f"pial_{side}"])
    sphere = surface.load_surf_mesh(meshes[f"sphere_{side}"])
    return (
        np.asarray(pial.coordinates, dtype=np.float64),
        np.asarray(sphere.coordinates, dtype=np.float64),
        np.asarray(pial.faces),
    )


def _occipital_cap(hemi: str, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """The n fsaverage5 vertices nearest the occipital pole on the sphere, nearest first, and their cap coordinates.

    Cap coordinates are an azimuthal equidistant projection around the pole, scaled so the farthest vertex lies
    at distance 1; axis 0 points laterally, axis 1 dorsally.
    """
    pial, sphere, _ = _fsaverage5(hemi)
    unit = sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    pole = unit[np.argmin(pial[:, 1])]  # the most posterior point of the cortex
    angle = np.arccos(np.clip(unit @ pole, -1.0, 1.0))
    nearest = np.argsort(angle, kind="stable")[:n_vertices]

    def tangent(direction: np.ndarray) -> np.ndarray:
        along = direction - (direction @ pole) * pole
        return along / np.linalg.norm(along)

    dorsal = tangent(np.array([0.0, 0.0, 1.0]))
    lateral = tangent(np.array([-1.0 if hemi == "lh" else 1.0, 0.0, 0.0]))
    lateral = tangent(lateral - (lateral @ dorsal) * dorsal)
    offsets = unit[nearest] - np.outer(unit[nearest] @ pole, pole)
    norms = np.linalg.norm(offsets, axis=1, keepdims=True)
    directions = np.divide(offsets, norms, out=np.zeros_like(offsets), where=norms > 0)
    radius = angle[nearest] / max(angle[nearest[-1]], 1e-12)
    xy = radius[:, None] * np.stack([directions @ lateral, directions @ dorsal], axis=1)
    return nearest, xy


def _mesh_adjacency(hemi: str, vertices: np.ndarray) -> scipy.sparse.csr_matrix:
    """Which of the given fsaverage5 vertices share a triangle edge, as a (len(vertices),)*2 sparse matrix."""
    faces = _fsaverage5(hemi)[2]
    position = np.full(FSAVERAGE5_N_VERTICES, -1)
    position[vertices] = np.arange(len(vertices))
    edges = position[np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])]
    edges = edges[(edges >= 0).all(axis=1)]
    return scipy.sparse.coo_matrix((np.ones(len(edges)), edges.T), shape=(len(vertices),) * 2).tocsr()


def _keep_largest_pieces(labels: np.ndarray, adjacency: scipy.sparse.csr_matrix) -> np.ndarray:
    """Labels with every ROI cut to its largest connected piece on the mesh (thin rings break up on coarse caps)."""
    labels = labels.copy()
    for label in np.unique(labels[labels > 0]):
        members = np.flatnonzero(labels == label)
        _, piece = scipy.sparse.csgraph.connected_components(adjacency[members][:, members], directed=False)
        labels[members[piece != np.bincount(piece).argmax()]] = 0
    return labels


def _roi_labels(xy: np.ndarray, adjacency: scipy.sparse.csr_matrix, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """ROI label (0 = none) of each cap vertex for every ROI class: rings and sectors around the pole, floc patches."""
    radius = np.hypot(xy[:, 0], xy[:, 1])
    angle = np.degrees(np.arctan2(xy[:, 1], xy[:, 0]))
    ventral = angle < 0
    labels = {}
    prf = np.zeros(len(xy), dtype=np.int32)
    inner = 0.0
    for area, outer in enumerate(PRF_RINGS):
        ring = (radius >= inner) & (radius < outer)
        prf[ring & ventral] = 2 * area + 1
        prf[ring & ~ventral] = 2 * area + 2
        inner = outer
    prf[(radius >= PRF_RINGS[-1]) & (radius < PRF_RINGS[-1] + 0.1) & (angle > -150) & (angle < -30)] = 7
    labels["prf-visualrois"] = prf
    sector = np.select([(angle >= -160) & (angle < -40), (angle >= -40) & (angle < 50)], [0, 1], 2)
    early, mid, high = STREAM_RINGS
    streams = np.zeros(len(xy), dtype=np.int32)
    streams[radius < early] = 1
    in_mid, in_high = (radius >= early) & (radius < mid), (radius >= mid) & (radius < high)
    streams[in_mid] = 2 + sector[in_mid]
    streams[in_high] = 5 + sector[in_high]
    labels["streams"] = streams
    for roi_class, names in ROI_NAMES.items():
        if not roi_class.startswith("floc-"):
            continue
        patches = np.array([FLOC_PATCHES[name] for name in names])
        centres = patches[:, :1] * np.stack([np.cos(np.radians(patches[:, 1])), np.sin(np.radians(patches[:, 1]))], 1)
        centres += rng.normal(0, 0.02, size=centres.shape)
        present = np.concatenate([[True], rng.random(len(names) - 1) >= FLOC_DROP_PROBABILITY])
        distance = np.linalg.norm(xy[:, None, :] - centres[None], axis=2)
        distance[:, ~present] = np.inf
        distance[distance > patches[:, 2]] = np.inf
        labels[roi_class] = np.where(np.isfinite(distance).any(1), distance.argmin(1) + 1, 0).astype(np.int32)
    return {roi_class: _keep_largest_pieces(labels[roi_class], adjacency) for roi_class in ROI_NAMES}


def _standardize(values: np.ndarray, n_fit: int) -> np.ndarray:
    """Columns z-scored with the mean and SD of their first n_fit rows (the training images)."""
    mean, std = values[:n_fit].mean(0), values[:n_fit].std(0)
    return (values - mean) / np.where(std > 0, std, 1.0)


def _simulate_signal(
    local: np.ndarray, global_: np.ndarray, xy: np.ndarray, hemi: str, n_train: int, rng: np.random.Generator
) -> np.ndarray:
    """Noiseless responses (n_images, n_vertices), unit variance over the training rows.

    Each vertex mixes a population receptive field over the local maps (position from its place on the cap,
    size growing with distance from the pole) with a random weighting of the global image statistics; the
    global share grows from 0 near the pole (early visual cortex) to 1 at the cap's rim.
    """
    radius = np.hypot(xy[:, 0], xy[:, 1])
    angle = np.arctan2(xy[:, 1], xy[:, 0])
    eccentricity = 0.45 * np.minimum(radius / 0.6, 1.0)
    side = 1.0 if hemi == "lh" else -1.0  # the left hemisphere sees the right visual field
    centre_x = side * eccentricity * np.cos(angle / 2) + rng.normal(0, 0.02, len(xy))
    centre_y = -eccentricity * np.sin(angle / 2) + rng.normal(0, 0.02, len(xy))  # ventral cortex: upper field
    size = 0.04 + 0.3 * radius
    grid = (np.arange(GRID) + 0.5) / GRID - 0.5
    grid_x, grid_y = np.meshgrid(grid, -grid)  # image rows run top to bottom
    squared_distance = (grid_x.reshape(-1, 1) - centre_x) ** 2 + (grid_y.reshape(-1, 1) - centre_y) ** 2
    fields = np.exp(-squared_distance / (2 * size**2))
    fields /= fields.sum(0)
    channel_weights = rng.normal(size=(local.shape[1], len(xy)))
    local_drive = ((local.reshape(*local.shape[:2], -1) @ fields) * channel_weights).sum(axis=1)
    global_drive = global_ @ rng.normal(size=(global_.shape[1], len(xy)))
    global_share = np.clip((radius - 0.3) / 0.45, 0.0, 1.0)
    signal = np.sqrt(1 - global_share) * _standardize(local_drive, n_train) + np.sqrt(global_share) * _standardize(
        global_drive, n_train
    )
    return _standardize(signal, n_train)


def _draw_ids(
    rng: np.random.Generator, n_subjects: int, n_train: int, n_test: int, shared_fraction: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per subject (sorted train ids, sorted test ids): a part shared by all subjects; no id is both train and test."""
    shared_train, shared_test = round(shared_fraction * n_train), round(shared_fraction * n_test)
    sizes = [shared_train, shared_test] + [n_train - shared_train, n_test - shared_test] * n_subjects
    if sum(sizes) > N_NSD_IMAGES:
        raise InvalidParameterError(f"need {sum(sizes)} distinct NSD ids but NSD has only {N_NSD_IMAGES} images")
    pools = np.split(rng.choice(N_NSD_IMAGES, size=sum(sizes), replace=False), np.cumsum(sizes)[:-1])
    return [
        (np.sort(np.concatenate([pools[0], pools[2 + 2 * s]])), np.sort(np.concatenate([pools[1], pools[3 + 2 * s]])))
        for s in range(n_subjects)
    ]


def _vertex_counts(n_vertices: int, n_subjects: int) -> list[dict[str, int]]:
    """Challenge vertices per subject and hemisphere: rh has 10% more, each later subject 1% fewer."""
    return [
        {"lh": n_vertices - s * n_vertices // 100, "rh": n_vertices + n_vertices // 10 - s * n_vertices // 100}
        for s in range(n_subjects)
    ]


def _save(path: Path, array: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=isinstance(array, dict))


def _render_image(nsd_id: int, seed: int) -> tuple[str, bytes, np.ndarray, np.ndarray]:
    """One id's image: source photo name, PNG bytes, local maps and global statistics."""
    photo, pixels = _make_image(_sample_photos(), np.random.default_rng([seed, 1, nsd_id]))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return (photo, buffer.getvalue(), *_image_features(pixels))


def _render_images(nsd_ids: list[int], seed: int) -> tuple[dict[int, bytes], dict[int, str], np.ndarray, np.ndarray]:
    """PNG bytes and source photo of each id's image, and its local maps and global statistics z-scored over all ids.

    Threads overlap PNG compression and numpy work (both release the GIL); each id has its own seed.
    """
    _sample_photos()  # load once before the threads start
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        rendered = list(pool.map(_render_image, nsd_ids, [seed] * len(nsd_ids)))
    photo_of = {nsd_id: photo for nsd_id, (photo, *_) in zip(nsd_ids, rendered, strict=True)}
    png = {nsd_id: data for nsd_id, (_, data, *_) in zip(nsd_ids, rendered, strict=True)}
    local, global_ = np.stack([r[2] for r in rendered]), np.stack([r[3] for r in rendered])
    local = (local - local.mean(axis=(0, 2, 3), keepdims=True)) / local.std(axis=(0, 2, 3), keepdims=True)
    return png, photo_of, local, _standardize(global_, len(global_))


def _write_hemisphere(
    root: Path,
    number: int,
    hemi: str,
    vertices: np.ndarray,
    xy: np.ndarray,
    local: np.ndarray,
    global_: np.ndarray,
    params: dict,
) -> dict:
    """Write one hemisphere's ROI masks, training fMRI, noise ceiling and truth arrays; return its truth summary."""
    subject, n_train, noise_sd = f"subj{number:02d}", params["n_train"], params["noise_sd"]
    rng = np.random.default_rng([params["seed"], 2, number, HEMISPHERES.index(hemi)])
    masks = root / subject / "roi_masks"
    all_vertices = np.zeros(FSAVERAGE_N_VERTICES, dtype=np.int32)
    all_vertices[vertices] = 1
    _save(masks / f"{hemi}.all-vertices_fsaverage_space.npy", all_vertices)
    labels = _roi_labels(xy, _mesh_adjacency(hemi, vertices), rng)
    for roi_class, challenge_labels in labels.items():
        fsaverage_labels = np.zeros(FSAVERAGE_N_VERTICES, dtype=np.int32)
        fsaverage_labels[vertices] = challenge_labels
        _save(masks / f"{hemi}.{roi_class}_challenge_space.npy", challenge_labels)
        _save(masks / f"{hemi}.{roi_class}_fsaverage_space.npy", fsaverage_labels)
    radius = np.hypot(xy[:, 0], xy[:, 1])
    amplitude = np.exp(rng.normal(np.log(1.3 - 0.8 * radius), 0.35))  # signal SD, larger near the pole
    signal = amplitude * _simulate_signal(local, global_, xy, hemi, n_train, rng)
    fmri = (signal + rng.normal(0.0, noise_sd, size=signal.shape)).astype(np.float32)
    signal = signal.astype(np.float32)
    noise_ceiling = amplitude**2 / (amplitude**2 + noise_sd**2)
    _save(root / subject / "training_split/training_fmri" / f"{hemi}_training_fmri.npy", fmri[:n_train])
    _save(root / subject / "test_split/test_fmri" / f"{hemi}_test_fmri.npy", fmri[n_train:])
    _save(root / subject / "test_split/noise_ceiling" / f"{hemi}_noise_ceiling.npy", noise_ceiling.astype(np.float32))
    truth = root / TRUTH_FOLDER / subject
    _save(truth / f"{hemi}_training_signal.npy", signal[:n_train])
    _save(truth / f"{hemi}_test_signal.npy", signal[n_train:])
    return {
        "n_vertices": len(vertices),
        "median_noise_ceiling": round(float(np.median(noise_ceiling)), 4),
        "roi_median_noise_ceiling": {
            name: round(float(np.median(noise_ceiling[labels[roi_class] == label])), 4)
            for roi_class, names in ROI_NAMES.items()
            for label, name in enumerate(names, start=1)
            if (labels[roi_class] == label).any()
        },
    }


def _write_dataset(root: Path, params: dict) -> dict:
    """Write the whole dataset under root; return the ground-truth summary."""
    n_train = params["n_train"]
    subject_ids = _draw_ids(
        np.random.default_rng([params["seed"], 0]),
        params["n_subjects"],
        n_train,
        params["n_test"],
        params["shared_fraction"],
    )
    unique_ids = np.unique(np.concatenate([np.concatenate(ids) for ids in subject_ids])).tolist()
    png, photo_of, local, global_ = _render_images(unique_ids, params["seed"])
    row_of = {nsd_id: row for row, nsd_id in enumerate(unique_ids)}
    vertex_counts = _vertex_counts(params["n_vertices"], params["n_subjects"])
    caps = {hemi: _occipital_cap(hemi, max(c[hemi] for c in vertex_counts)) for hemi in HEMISPHERES}
    subjects = {}
    for number, ((train_ids, test_ids), counts) in enumerate(zip(subject_ids, vertex_counts, strict=True), start=1):
        folder = root / f"subj{number:02d}"
        for image_dir, prefix, ids in (
            (folder / "training_split/training_images", "train", train_ids),
            (folder / "test_split/test_images", "test", test_ids),
        ):
            image_dir.mkdir(parents=True)
            for row, nsd_id in enumerate(ids.tolist(), start=1):
                (image_dir / f"{prefix}-{row:04d}_nsd-{nsd_id:05d}.png").write_bytes(png[nsd_id])
        for roi_class, names in ROI_NAMES.items():
            _save(folder / "roi_masks" / f"mapping_{roi_class}.npy", {0: "Unknown", **dict(enumerate(names, start=1))})
        rows = [row_of[nsd_id] for nsd_id in np.concatenate([train_ids, test_ids]).tolist()]
        subjects[folder.name] = {"n_train": len(train_ids), "n_test": len(test_ids)}
        for hemi in HEMISPHERES:
            nearest, cap_xy = caps[hemi]
            order = np.argsort(nearest[: counts[hemi]])  # challenge space runs in fsaverage vertex order
            subjects[folder.name][hemi] = _write_hemisphere(
                root, number, hemi, nearest[order], cap_xy[order], local[rows], global_[rows], params
            )
    shared = set.intersection(*(set(np.concatenate(ids).tolist()) for ids in subject_ids))
    return {
        "params": params,
        "description": (
            "Images: random crops/flips/colour jitter of scikit-image and scikit-learn sample photos at 425x425. "
            "Vertices: fsaverage5 vertices (= the first 10,242 of fsaverage) nearest the occipital pole; ROIs are "
            "rings, sectors and patches around it. fMRI = amplitude * signal + N(0, noise_sd^2) per vertex, where "
            "signal is unit-variance over the training images and mixes population receptive fields over local "
            "luminance/colour/edge maps (near the pole) with global image statistics (far from it). "
            "noise_ceiling = amplitude^2 / (amplitude^2 + noise_sd^2), the fraction of a response's variance that "
            "the signal explains (the challenge's units)."
        ),
        "local_channels": list(LOCAL_CHANNELS),
        "global_features": list(GLOBAL_FEATURES),
        "truth_files": {
            "noise_ceiling": "subjXX/test_split/noise_ceiling/{lh,rh}_noise_ceiling.npy float32 (n_vertices,), 0..1",
            "test_fmri": "subjXX/test_split/test_fmri/{lh,rh}_test_fmri.npy float32 (n_test, n_vertices), "
            "signal + noise",
            "training_signal": f"{TRUTH_FOLDER}/subjXX/{{lh,rh}}_training_signal.npy float32 (n_train, n_vertices)",
            "test_signal": f"{TRUTH_FOLDER}/subjXX/{{lh,rh}}_test_signal.npy float32 (n_test, n_vertices)",
        },
        "n_images": len(unique_ids),
        "n_ids_shared_by_all_subjects": len(shared),
        "photo_counts": {name: list(photo_of.values()).count(name) for name in sorted(_sample_photos())},
        "subjects": subjects,
    }


def _is_complete(root: Path, params: dict) -> bool:
    """Whether root holds a finished demo dataset made with params (every listed file present at its size)."""
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("params") != params or not isinstance(manifest.get("files"), dict):
        return False
    for relative, size in manifest["files"].items():
        try:
            if (root / relative).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def _write_manifest(root: Path, params: dict) -> None:
    """Record params and every file's size, written last: its presence marks the dataset complete."""
    files = {
        path.relative_to(root).as_posix(): path.stat().st_size for path in sorted(root.rglob("*")) if path.is_file()
    }
    (root / MANIFEST_FILE).write_text(json.dumps({"params": params, "files": files}, indent=1))


def make_demo_data(
    out_dir: str | os.PathLike,
    *,
    n_subjects: int = 2,
    n_train: int = 120,
    n_test: int = 30,
    shared_fraction: float = 0.5,
    n_vertices: int = 1500,
    noise_sd: float = 1.0,
    seed: int = 0,
) -> Path:
    """Write a small synthetic Algonauts 2023 dataset to out_dir (or reuse an identical one) and return its path.

    Layout, exactly as the challenge data (rows 1-based in increasing NSD id order, ids 0-based)::

        subjXX/training_split/training_fmri/{lh,rh}_training_fmri.npy   float32 (n_train, n_vertices)
        subjXX/training_split/training_images/train-0001_nsd-00013.png  425x425 RGB
        subjXX/test_split/test_images/test-0001_nsd-00845.png
        subjXX/roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy       int32 (163842,) 0/1
        subjXX/roi_masks/{lh,rh}.<class>_{challenge,fsaverage}_space.npy int32 ROI ids, 0 = none
        subjXX/roi_masks/mapping_<class>.npy                            dict {0: "Unknown", 1: "V1v", ...}
        subjXX/test_split/test_fmri/{lh,rh}_test_fmri.npy               float32 (n_test, n_vertices)
        subjXX/test_split/noise_ceiling/{lh,rh}_noise_ceiling.npy       float32 (n_vertices,), fraction 0..1

    The test fMRI and noise ceiling are where the post-challenge release keeps them (the ceiling in the
    challenge's units: the fraction of a test response's variance the noiseless signal explains). Plus the
    simulation's truth: ``demo_truth/subjXX/{lh,rh}_{training_signal,test_signal}.npy`` and ``demo_truth.json``
    (parameters, model, per-ROI median noise ceilings).

    Parameters
    ----------
    out_dir : str or path-like
        Dataset folder. Reused as is when it holds a complete demo dataset with the same parameters; rebuilt
        when it holds a stale or damaged one; refused (FileExistsError) when it holds anything else.
    n_subjects : int, default=2
    n_train, n_test : int, default=120, 30
        Training and test images per subject. Test ids never appear among any subject's training ids.
    shared_fraction : float, default=0.5
        Fraction of each subject's training (and test) images that all subjects share, like NSD's shared images.
    n_vertices : int, default=1500
        Challenge vertices of subj01's left hemisphere; the right has 10% more and each later subject 1% fewer
        (counts differ by hemisphere and subject in the real data). The rh count must fit in fsaverage5 (10,242).
    noise_sd : float, default=1.0
        SD of the Gaussian noise added to every vertex; the noiseless signal's SD per vertex is about 0.3-1.6
        (larger near the occipital pole), so noise ceilings spread over roughly 0.05-0.9 (median ~0.35 at
        noise_sd=1).
    seed : int, default=0
        Seeds ids, images, ROIs, weights and noise; the same arguments give byte-identical arrays.

    Returns
    -------
    Path
        out_dir, which can be passed to ``featurestore.stimuli.open_stimuli`` and the challenge loaders.

    Examples
    --------
    >>> data_dir = make_demo_data("demo_data", n_train=120, n_test=30)  # doctest: +SKIP
    """
    params = {
        "generator_version": GENERATOR_VERSION,
        "n_subjects": int(n_subjects),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "shared_fraction": float(shared_fraction),
        "n_vertices": int(n_vertices),
        "noise_sd": float(noise_sd),
        "seed": int(seed),
    }
    for name, least in (("n_subjects", 1), ("n_train", 2), ("n_test", 1), ("n_vertices", 1)):
        if params[name] < least:
            raise InvalidParameterError(f"{name} must be at least {least}; got {params[name]}")
    if params["n_subjects"] > 99:
        raise InvalidParameterError(f"n_subjects must be at most 99 (folders are subjXX); got {n_subjects}")
    if not 0.0 <= params["shared_fraction"] <= 1.0:
        raise InvalidParameterError(f"shared_fraction must be in [0, 1]; got {shared_fraction}")
    if params["n_vertices"] + params["n_vertices"] // 10 > FSAVERAGE5_N_VERTICES:
        raise InvalidParameterError(
            f"n_vertices + 10% (the rh count) must fit in fsaverage5's 10,242 vertices; got {n_vertices}"
        )
    if params["noise_sd"] < 0:
        raise InvalidParameterError(f"noise_sd must be non-negative; got {noise_sd}")
    out = Path(out_dir)
    if out.is_file():
        raise FileExistsError(f"{out} is a file; make_demo_data needs a folder")
    if _is_complete(out, params):
        return out
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_FILE).exists():
        raise FileExistsError(f"{out} exists and is not a demo dataset (no {MANIFEST_FILE}); choose an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        truth = _write_dataset(staging, params)
        (staging / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
        _write_manifest(staging, params)
        if _is_complete(out, params):  # another process finished the same dataset meanwhile
            return out
        if out.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{out.name}.stale-", dir=out.parent))
            out.rename(stale / out.name)
            shutil.rmtree(stale)
        try:
            staging.rename(out)
        except OSError:
            if not _is_complete(out, params):  # unless another process has just put the same dataset there
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
