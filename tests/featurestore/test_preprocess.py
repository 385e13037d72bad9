"""The device transform against the PIL transforms it replaces: torchvision's own weights transforms, open_clip's and
timm's own preprocess objects, on the real photos shipped by scikit-image and scikit-learn (224 to 518 px, bilinear
and bicubic); what it refuses to translate; and which path a backbone takes."""

from __future__ import annotations

import dataclasses

import numpy as np
import open_clip
import pytest
import timm
import torch
import torchvision
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torchvision import transforms as T

from featurestore.backbones import load_backbone
from featurestore.backbones._base import catalog_transform
from featurestore.catalog import CatalogError, Preprocessing, get_entry
from featurestore.preprocess import MAX_LEVELS, MEAN_LEVELS, DeviceTransform, collate_images, decode_uint8, translate


def level_differences(device: torch.Tensor, reference: torch.Tensor, std: tuple[float, ...]) -> torch.Tensor:
    """|device - reference| in uint8 levels of the image before normalisation (normalised values x std x 255)."""
    return ((device - reference) * torch.tensor(std)[:, None, None] * 255).abs()


def assert_within_tolerance(transform: DeviceTransform, reference, photos: list[Image.Image]) -> None:
    """Each photo through `transform` (as a batch of differently sized uint8 images) against `reference` (PIL), with
    torchvision's uint8 resize (the CPU's) and with the two rounded float passes (CUDA's, here run on the CPU)."""
    expected = [reference(photo) for photo in photos]
    for variant in (transform, dataclasses.replace(transform, native_cpu=False)):
        device = variant([decode_uint8(photo) for photo in photos])
        for photo, out, pil in zip(photos, device, expected):
            assert out.shape == pil.shape
            levels = level_differences(out, pil, transform.std)
            assert float(levels.max()) <= MAX_LEVELS + 1e-3, (photo.size, variant.native_cpu)
            assert float(levels.mean()) <= MEAN_LEVELS, (photo.size, variant.native_cpu)


def from_catalog(**values) -> DeviceTransform:
    transform, reason = translate(catalog_transform(Preprocessing(**values)))
    assert transform is not None, reason
    return transform


@pytest.mark.parametrize(
    "weights",
    [
        torchvision.models.AlexNet_Weights.IMAGENET1K_V1,  # bilinear, 256 -> 224
        torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1,  # bicubic, 256 -> 224
        torchvision.models.ResNet50_Weights.IMAGENET1K_V2,  # bilinear, 232 -> 224
    ],
    ids=str,
)
def test_catalog_recipe_on_the_device_matches_torchvisions_own_transform(photos, weights):
    """The catalog's recipe of a torchvision tag, run on the device, against that tag's own ``transforms()``."""
    reference = weights.transforms()
    transform = from_catalog(
        resize=reference.resize_size[0],
        crop=reference.crop_size[0],
        interpolation=reference.interpolation.value,
        mean=tuple(reference.mean),
        std=tuple(reference.std),
    )
    assert_within_tolerance(transform, reference, photos)


def test_open_clip_backbone_on_the_device_matches_open_clips_own_preprocess(photos):
    backbone = load_backbone(get_entry("ViT-B-32.untrained"), "cpu", preprocess_on="device")
    _, _, reference = open_clip.create_model_and_transforms("ViT-B-32-quickgelu", pretrained=None)
    assert backbone.device_transform.interpolation == "bicubic" and backbone.preprocessing["path"] == "device"
    assert_within_tolerance(backbone.device_transform, reference, photos)


@pytest.mark.parametrize("architecture", ["test_vit", "vit_small_patch14_dinov2"])  # 0.95 crop at 160; 518 px
def test_timm_transform_on_the_device_matches_timms_own_eval_transform(photos, architecture):
    model = timm.create_model(architecture, pretrained=False)
    reference = create_transform(**resolve_data_config(model=model), is_training=False)
    transform, reason = translate(reference)
    assert transform is not None, reason
    assert_within_tolerance(transform, reference, photos)


def test_timm_squash_crop_mode_on_the_device_matches_timm(photos):
    reference = create_transform(input_size=(3, 224, 224), crop_mode="squash", interpolation="bicubic")
    transform, reason = translate(reference)
    assert transform is not None and transform.resize == (256, 256), reason
    assert_within_tolerance(transform, reference, photos)


def test_the_tolerance_tells_pillows_rounding_from_a_one_step_float_resize(photos):
    """Why the resize is two rounded passes: torch's one-step float resize (what torchvision does on CUDA) breaks
    the tolerance that the emulation of Pillow keeps."""
    transform = from_catalog(resize=518, crop=518, interpolation="bicubic", mean=(0.0,) * 3, std=(1.0,) * 3)
    one_step = dataclasses.replace(transform, resize=None)  # resized below in one float pass instead
    reference = T.Compose([T.Resize(518, T.InterpolationMode.BICUBIC), T.CenterCrop(518), T.ToTensor()])
    worst = 0.0
    for photo in photos:
        pixels = decode_uint8(photo)[None].float()
        resized = torch.nn.functional.interpolate(
            pixels, size=reference.transforms[0](photo).size[::-1], mode="bicubic", antialias=True, align_corners=False
        )
        out = one_step(resized.clamp(0, 255).round())[0]
        worst = max(worst, float(level_differences(out, reference(photo), (1.0,) * 3).max()))
    assert worst > 2 * MAX_LEVELS


def test_a_batch_equals_the_same_images_one_by_one(photos):
    transform = from_catalog(resize=256, crop=224, interpolation="bicubic", mean=(0.5,) * 3, std=(0.25,) * 3)
    same_size = [decode_uint8(photo.resize((300, 200))) for photo in photos]
    batch, rows, problems = collate_images([(image, row, "") for row, image in enumerate(same_size)])
    assert isinstance(batch, torch.Tensor) and rows == list(range(len(photos))) and problems == [""] * len(photos)
    assert torch.equal(transform(batch), transform(same_size))
    mixed, _, _ = collate_images([(decode_uint8(photo), 0, "") for photo in photos[:2]])
    assert isinstance(mixed, list)  # sizes differ: each image is resized on its own


def test_decode_gives_rgb_uint8_channels_first(photos):
    grey = photos[0].convert("L")
    pixels = decode_uint8(grey)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, grey.height, grey.width)
    assert torch.equal(pixels[0], torch.from_numpy(np.array(grey))) and torch.equal(pixels[0], pixels[2])


@pytest.mark.parametrize(
    ("transform", "reason"),
    [
        (
            T.Compose(
                [T.Resize(64, interpolation=T.InterpolationMode.NEAREST), T.ToTensor(), T.Normalize([0] * 3, [1] * 3)]
            ),
            "nearest resize",
        ),
        (T.Compose([T.Resize(64, max_size=80), T.ToTensor(), T.Normalize([0] * 3, [1] * 3)]), "max_size"),
        (T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0] * 3, [1] * 3)]), "RandomHorizontalFlip"),
        (T.Compose([T.Resize(64), T.ToTensor()]), "does not end in a float conversion and a Normalize"),
        (T.Compose([T.ToTensor(), T.Resize(64), T.Normalize([0] * 3, [1] * 3)]), "Resize"),  # resize of a tensor
        (create_transform(input_size=(3, 64, 64), crop_mode="border"), "ResizeKeepRatio"),  # timm's letterbox
        (open_clip.image_transform(64, is_train=False, resize_mode="longest"), "ResizeKeepRatio"),
    ],
    ids=["nearest", "max_size", "random", "no normalize", "order", "timm border", "open_clip longest"],
)
def test_transforms_without_a_device_version_keep_pil_and_say_why(transform, reason):
    translated, why = translate(transform)
    assert translated is None and reason in why


def test_backbone_path_defaults_to_pil_on_the_cpu_and_is_recorded():
    entry = get_entry("alexnet.untrained")
    cpu = load_backbone(entry, "cpu")
    assert cpu.device_transform is None and cpu.preprocessing["path"] == "pil" and "CPU" in cpu.pil_reason
    device = cpu.preprocessed_on("device")
    assert device.preprocessing["path"] == "device" and device.device_transform == DeviceTransform(
        256, "bilinear", (224, 224), entry.preprocessing.mean, entry.preprocessing.std
    )
    assert device.model is cpu.model and device.preprocessed_on("device") is device
    nearest = dataclasses.replace(
        entry, preprocessing=dataclasses.replace(entry.preprocessing, interpolation="nearest")
    )
    kept = load_backbone(nearest, "cpu", preprocess_on="device")
    assert kept.preprocessing["path"] == "pil" and "nearest" in kept.pil_reason
    with pytest.raises(CatalogError, match=r"preprocess_on: expected one of \['device', 'pil'\], got 'gpu'"):
        load_backbone(entry, "cpu", preprocess_on="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_transform_matches_pil(photos):
    weights = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1
    reference = weights.transforms()
    transform = from_catalog(resize=256, crop=224, interpolation="bicubic", mean=reference.mean, std=reference.std)
    on_cuda = transform([decode_uint8(photo).cuda() for photo in photos]).cpu()
    for photo, out in zip(photos, on_cuda):
        levels = level_differences(out, reference(photo), transform.std)
        assert float(levels.max()) <= MAX_LEVELS + 1e-3 and float(levels.mean()) <= MEAN_LEVELS
