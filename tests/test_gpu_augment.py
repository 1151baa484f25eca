"""Batch augmentation on the device (data.augment.on_device), run here on the CPU: exact
oracles where the transform is the identity or a flip, determinism under a seed, and the
same distribution of crops and colours as the per-image CPU pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from clibd.config import AugmentConfig, DataConfig
from clibd.data.dataset import SpecimenDataset
from clibd.data.gpu_augment import BatchAugment, crop_boxes
from clibd.data.transforms import build_normalize, build_pil_transform, decode_side
from clibd.train.build import TrainingData
from tests.test_dataset import IMAGE_SIZE, data_cfg, make_table

MEAN, STD = DataConfig().mean, DataConfig().std
PLAIN = dict(scale_min=1.0, hflip=0.0, vflip=0.0, rotate_degrees=0.0, color_jitter=0.0)


def _images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _augment(size: int, **fields) -> BatchAugment:
    return BatchAugment(size, AugmentConfig(**(PLAIN | fields)), MEAN, STD)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised output back to [0, 255]."""
    return (x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255


def test_whole_square_unflipped_is_exactly_the_normalised_input():
    # scale 1 leaves no crop that fits but the whole square (torchvision's fallback).
    images = _images(3, 16)
    out = _augment(16)(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, build_normalize(MEAN, STD)(images), atol=2e-5, rtol=0)


def test_hflip_one_mirrors_every_image_exactly():
    images = _images(2, 12)
    out = _augment(12, hflip=1.0)(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, build_normalize(MEAN, STD)(images.flip(-1)), atol=2e-5, rtol=0)


def test_shapes_ranges_and_white_rotation_corners():
    out = _augment(32, scale_min=0.5, hflip=0.5, vflip=0.5, rotate_degrees=30, color_jitter=0.4)(_images(4, 40))
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    px = _pixels(out)
    assert px.min() >= -1e-3 and px.max() <= 255 + 1e-3 and px.std() > 20
    black = torch.zeros(8, 3, 40, 40, dtype=torch.uint8)
    px = _pixels(_augment(32, rotate_degrees=45)(black, torch.Generator().manual_seed(0)))
    # uniform(-45, 45) degrees: the centre stays black; corners turn white as |angle| grows
    assert px[:, :, 16, 16].abs().max() < 1e-3
    assert (px[:, :, [0, 0, -1, -1], [0, -1, 0, -1]] > 254).any()


def test_same_seed_same_batch_other_seed_other_batch():
    aug = _augment(24, scale_min=0.5, hflip=0.5, rotate_degrees=10, color_jitter=0.3)
    images = _images(5, 30)
    a = aug(images, torch.Generator().manual_seed(7))
    b = aug(images, torch.Generator().manual_seed(7))
    c = aug(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)  # no generator: torch's global RNG, which the training loop reseeds per batch
    d = aug(images)
    torch.manual_seed(3)
    assert torch.equal(d, aug(images))


def test_crop_boxes_follow_random_resized_crop_in_distribution():
    side, n = 251, 4000
    ours = crop_boxes(n, side, 0.8, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    img = torch.zeros(3, side, side)
    draws = [RandomResizedCrop.get_params(img, [0.8, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    theirs = torch.tensor(draws, dtype=torch.float32)
    assert (ours[:, 0] + ours[:, 2] <= side).all() and (ours[:, 1] + ours[:, 3] <= side).all()
    area_ours, area_theirs = (ours[:, 2] * ours[:, 3]) / side**2, (theirs[:, 2] * theirs[:, 3]) / side**2
    # Means and spreads agree within a few standard errors (~0.001 for 4000 draws).
    assert abs(area_ours.mean() - area_theirs.mean()) < 0.005
    assert abs(area_ours.std() - area_theirs.std()) < 0.005
    for col in range(4):
        assert abs(ours[:, col].mean() - theirs[:, col].mean()) < 1.5, col


def test_colour_jitter_matches_the_cpu_pipeline_in_distribution():
    """Per-image channel means and spreads over 1000 draws: batch version vs torchvision on PIL."""
    rng = np.random.default_rng(0)
    array = np.clip(rng.normal([150, 120, 90], 40, (32, 32, 3)), 0, 255).astype(np.uint8)
    augment = AugmentConfig(**(PLAIN | dict(color_jitter=0.4)))
    cpu = build_pil_transform(32, augment)
    torch.manual_seed(0)
    theirs = torch.stack([cpu(Image.fromarray(array)) for _ in range(1000)]).float()
    images = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).expand(1000, -1, -1, -1).contiguous()
    ours = _pixels(BatchAugment(32, augment, MEAN, STD)(images, torch.Generator().manual_seed(0)))
    for stat in (lambda x: x.mean((2, 3)), lambda x: x.std((2, 3))):
        a, b = stat(ours), stat(theirs)
        # Standard error of the difference of the means: sqrt(2) * 32 / sqrt(1000) = 1.4 at most.
        torch.testing.assert_close(a.mean(0), b.mean(0), atol=4.5, rtol=0)
        torch.testing.assert_close(a.std(0), b.std(0), atol=0, rtol=0.1)


def test_bad_input_is_refused_naming_what_it_got():
    with pytest.raises(ValueError, match=r"uint8 \[B, 3, S, S\] images, got torch.float32 \(2, 3, 8, 8\)"):
        _augment(8)(torch.zeros(2, 3, 8, 8))


def test_on_device_dataset_serves_uint8_squares_of_the_decode_side(tmp_path):
    cfg = data_cfg(tmp_path)
    cfg.augment = AugmentConfig(scale_min=0.5, on_device=True)
    ds = SpecimenDataset(make_table(tmp_path), cfg, IMAGE_SIZE, train=True)
    side = decode_side(IMAGE_SIZE, cfg.augment)
    a, b = ds.__getitems__([3, 8]), ds.__getitems__([3, 8])
    assert a["image"].dtype == torch.uint8 and a["image"].shape == (2, 3, side, side)
    assert torch.equal(a["image"], b["image"])  # nothing random left on the CPU
    out = BatchAugment(IMAGE_SIZE, cfg.augment, cfg.mean, cfg.std)(a["image"])
    assert out.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    eval_ds = SpecimenDataset(make_table(tmp_path), cfg, IMAGE_SIZE, train=False)
    assert eval_ds.__getitems__([3])["image"].dtype == torch.float32  # evaluation is untouched


def test_training_data_prepare_augments_only_the_images():
    augment = _augment(8, hflip=1.0)
    data = TrainingData(
        table=None,
        skips=None,
        model=None,
        train=None,
        train_loader=None,
        val_loader=None,
        trainable={},
        augment=augment,
    )
    images = _images(2, 8)
    batch = {"image": images, "dna_ids": torch.arange(6).view(2, 3)}
    out = data.prepare(batch)
    torch.testing.assert_close(out["image"], build_normalize(MEAN, STD)(images.flip(-1)), atol=2e-5, rtol=0)
    assert out["dna_ids"] is batch["dna_ids"] and batch["image"] is images  # the loader's batch is not changed
    assert TrainingData(None, None, None, None, None, None, {}).prepare(batch) is batch  # option off: untouched
