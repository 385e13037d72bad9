"""Preprocessing on the model's device: decoding workers hand over uint8 pixels, and the resize / centre-crop /
normalise of a backbone's PIL transform run as batched tensor operations where the model is.

On a GPU the CPU cost per image was decode + PIL resize + crop + float conversion (6.8 ms per 425 px PNG, several
times the H200's forward pass of AlexNet); here the workers only decode, and the rest runs on the device for the
whole batch. The device transform is translated from the backbone's own PIL transform (torchvision's ``Resize``,
``CenterCrop``, ``ToTensor`` / ``PILToTensor`` + ``ConvertImageDtype``, ``Normalize``, the RGB conversions of timm
and open_clip), so it follows the same recipe; a transform with any other step, or a ``nearest`` resize, keeps
the PIL path (`translate` says why).

Why the resize is two passes with rounding in between: Pillow resamples horizontally then vertically, storing
uint8 after each pass, and torch's one-step float resize differs from it by up to 13 levels (of 255) at strong
edges for bicubic. Emulating Pillow's order and rounding brings every pixel within ``MAX_LEVELS`` levels
(measured on the scikit-image / scikit-learn sample photos, 224 to 518 px, bilinear and bicubic, see
``tests/featurestore/test_preprocess.py``). On the CPU, torchvision's own uint8 resize kernels (integer arithmetic
modelled on Pillow's) hold the same tolerance and run several times as fast as Pillow per image, so they are used there.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as nnf
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

__all__ = ["MAX_LEVELS", "MEAN_LEVELS", "DeviceTransform", "collate_images", "decode_uint8", "translate"]

# The tolerance of the device transform against the PIL transform, in uint8 levels of the resized, cropped image
# (before normalisation): no pixel further than MAX_LEVELS, and a mean absolute difference below MEAN_LEVELS.
MAX_LEVELS = 2
MEAN_LEVELS = 0.15
_MODES = {T.InterpolationMode.BILINEAR: "bilinear", T.InterpolationMode.BICUBIC: "bicubic"}
_INTERPOLATIONS = {name: mode for mode, name in _MODES.items()}
_RGB_STEPS = ("ToRGB", "MaybeConvertMode", "_convert_to_rgb")  # ours, open_clip's class and function


def decode_uint8(image: Image.Image) -> torch.Tensor:
    """A decoded image as a uint8 tensor (3, H, W): all a decoding worker does on the device path."""
    array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def collate_images(samples: Sequence[tuple[torch.Tensor, int, str]]) -> tuple[Any, list[int], list[str]]:
    """DataLoader collate: (images, rows, problems); images stack into one batch when they share a size, else stay
    a list (a folder of photos of many sizes; the device transform resizes each to the common output size)."""
    images, rows, problems = zip(*samples)
    stacked = torch.stack(images) if len({tuple(image.shape) for image in images}) == 1 else list(images)
    return stacked, list(rows), list(problems)


def resized_size(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """torchvision's ``Resize`` output size: an int sets the shorter side (the longer one truncated), a pair is
    (height, width)."""
    if not isinstance(size, int):
        return int(size[0]), int(size[1])
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_like_pil(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Antialiased resize of float pixel values (0..255) in Pillow's order: the width pass, rounded to whole levels
    and clipped, then the height pass, rounded and clipped."""
    height, width = images.shape[-2:]
    new_height, new_width = size
    if new_width != width:
        images = nnf.interpolate(images, size=(height, new_width), mode=mode, antialias=True, align_corners=False)
        images = images.clamp_(0, 255).round_()
    if new_height != height:
        images = nnf.interpolate(images, size=(new_height, new_width), mode=mode, antialias=True, align_corners=False)
        images = images.clamp_(0, 255).round_()
    return images


@dataclass(frozen=True)
class DeviceTransform:
    """Resize (shorter side or exact size), centre-crop and normalise uint8 images on their device.

    Called with a uint8 batch (B, 3, H, W) or a list of uint8 images (3, H, W) of different sizes; returns float32
    (B, 3, h, w), as the PIL transform would give image by image (within ``MAX_LEVELS`` / 255 before normalising).
    On the CPU, with ``native_cpu``, the resize is torchvision's own uint8 kernel (integer arithmetic modelled on
    Pillow's; 3.7 to 4.2 x Pillow's speed in BENCHMARKS.md) where torchvision has one; elsewhere (CUDA) it is
    `resize_like_pil`. Both are held to the same tolerance in the tests.
    """

    resize: int | tuple[int, int] | None
    interpolation: str
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_cpu: bool = True

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            return self._normalised(self._cropped(images))
        return self._normalised(torch.stack([self._cropped(image[None])[0] for image in images]))

    def _cropped(self, images: torch.Tensor) -> torch.Tensor:
        """Float pixel values (0..255) after the resize and the crop, rounded as Pillow stores them."""
        if self.resize is None:
            pixels = images.float()
        else:
            size = resized_size(*images.shape[-2:], self.resize)
            if self.native_cpu and images.device.type == "cpu" and _native_uint8(self.interpolation, images.dtype):
                pixels = F.resize(images, list(size), interpolation=_INTERPOLATIONS[self.interpolation]).float()
            else:
                pixels = resize_like_pil(images.float(), size, self.interpolation)
        if self.crop is not None:
            pixels = F.center_crop(pixels, list(self.crop))
        return pixels

    def _normalised(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(pixels.div_(255), list(self.mean), list(self.std))


def _native_uint8(interpolation: str, dtype: torch.dtype) -> bool:
    """Whether torchvision resizes uint8 on this CPU with its own uint8 kernel (bicubic always; bilinear with AVX2,
    AVX-512 or ARM), rather than through float32 in one pass."""
    if dtype != torch.uint8:
        return False
    return (
        interpolation == "bicubic"
        or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        or (platform.machine() in ("aarch64", "arm64"))
    )


def _steps(transform: Any) -> list[Any]:
    """The transform's steps, nested ``Compose`` flattened (timm wraps its eval transform in ours)."""
    if isinstance(transform, T.Compose):
        return [step for inner in transform.transforms for step in _steps(inner)]
    return [transform]


def _name(step: Any) -> str:
    return getattr(step, "__name__", type(step).__name__)


def translate(transform: Callable[[Image.Image], torch.Tensor]) -> tuple[DeviceTransform | None, str]:
    """(the device transform doing what the PIL `transform` does, ""), or (None, why it cannot) for a transform
    with a step other than an RGB conversion, one ``Resize`` (bilinear or bicubic, antialiased, no max_size), one
    ``CenterCrop``, the conversion to float in [0, 1] and one ``Normalize``, in that order."""
    resize = crop = normalize = None
    interpolation = "bilinear"
    to_uint8 = to_float = False
    for step in _steps(transform):
        name = _name(step)
        if name in _RGB_STEPS and getattr(step, "mode", "RGB") == "RGB":
            continue  # the decoding workers already give RGB
        if isinstance(step, T.Resize) and resize is None and crop is None and not (to_uint8 or to_float):
            if step.interpolation not in _MODES:
                return None, f"{step.interpolation.value} resize (only bilinear and bicubic match Pillow)"
            if step.max_size is not None or step.antialias is False:
                return None, f"{step!r} (max_size or no antialias)"
            size = step.size
            resize = size if isinstance(size, int) else (size[0] if len(size) == 1 else (size[0], size[1]))
            interpolation = _MODES[step.interpolation]
        elif isinstance(step, T.CenterCrop) and crop is None and not (to_uint8 or to_float):
            crop = (int(step.size[0]), int(step.size[1]))
        elif isinstance(step, T.PILToTensor) and not (to_uint8 or to_float):
            to_uint8 = True
        elif (isinstance(step, T.ToTensor) and not (to_uint8 or to_float)) or (
            isinstance(step, T.ConvertImageDtype) and step.dtype == torch.float32 and to_uint8 and not to_float
        ):
            to_float = True  # ToTensor (timm's and open_clip's MaybeToTensor too) or PILToTensor + ConvertImageDtype
        elif isinstance(step, T.Normalize) and to_float and normalize is None:
            normalize = (_triple(step.mean), _triple(step.std))
        else:
            return None, f"step {name} ({step!r}) has no device version"
    if not to_float or normalize is None:
        return None, "the transform does not end in a float conversion and a Normalize"
    return DeviceTransform(resize, interpolation, crop, *normalize), ""


def _triple(values: Any) -> tuple[float, float, float]:
    values = values.tolist() if isinstance(values, torch.Tensor) else list(values)
    return tuple(float(value) for value in values)  # type: ignore[return-value]
