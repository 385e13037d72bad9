"""Session fixtures for the whole suite: real photos, seeded untrained weights files, and a user catalog using them.

Nothing is downloaded: the photos ship with scikit-image and scikit-learn, and the weights are random weights
seeded the plain PyTorch way (``torch.manual_seed(0)`` then the constructor), saved as state_dict files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch
from PIL import Image

torch.set_num_threads(min(2, torch.get_num_threads()))

UNTRAINED_SEED = 0


def _alexnet() -> torch.nn.Module:
    import torchvision

    return torchvision.models.alexnet(weights=None)


def _vit_b_32() -> torch.nn.Module:
    import open_clip

    return open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)


# weights name -> constructor; the architectures of the catalog's `alexnet` and `ViT-B-32.openai` entries
UNTRAINED_MODELS: dict[str, Callable[[], torch.nn.Module]] = {"alexnet": _alexnet, "ViT-B-32": _vit_b_32}


class UntrainedWeights(Mapping[str, Path]):
    """name -> state_dict file of the model built right after ``torch.manual_seed(0)``, made on first access."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._made: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._made:
            build = UNTRAINED_MODELS[name]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(UNTRAINED_SEED)
                model = build()
            path = self._folder / f"{name}-seed{UNTRAINED_SEED}.pt"
            torch.save(model.state_dict(), path)
            self._made[name] = path
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(UNTRAINED_MODELS)

    def __len__(self) -> int:
        return len(UNTRAINED_MODELS)


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """Six real RGB photos of different sizes: skimage astronaut, coffee, chelsea, rocket; sklearn china, flower."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), *load_sample_images().images]
    return [Image.fromarray(array).convert("RGB") for array in arrays]


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory: pytest.TempPathFactory) -> UntrainedWeights:
    """``untrained_weights["alexnet"]`` / ``["ViT-B-32"]``: seeded untrained state_dict files, each built lazily."""
    return UntrainedWeights(tmp_path_factory.mktemp("untrained-weights"))


@pytest.fixture(scope="session")
def test_catalog_file(tmp_path_factory: pytest.TempPathFactory, untrained_weights: UntrainedWeights) -> Path:
    """A user catalog with ``alexnet.testfile`` and ``ViT-B-32.testfile``: the built-in entries with the seeded
    untrained weights given as local files (the offline way to use real weights)."""
    path = tmp_path_factory.mktemp("catalog") / "test_catalog.yaml"
    path.write_text(
        "alexnet.testfile:\n"
        "  extends: alexnet\n"
        f'  weights: "file:{untrained_weights["alexnet"]}"\n'
        "ViT-B-32.testfile:\n"
        "  extends: ViT-B-32.openai\n"
        f'  weights: "file:{untrained_weights["ViT-B-32"]}"\n',
        encoding="utf-8",
    )
    return path
