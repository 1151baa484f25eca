"""Training augmentation on a batch already on the device (``data.augment.on_device: true``).

The CPU pipeline (``transforms.build_pil_transform``) augments one PIL image at a time in
the loader workers; on a GPU machine that caps training at what the CPU cores decode and
warp. With ``on_device`` the dataset serves un-augmented uint8 squares of side
``decode_side(image_size, augment)`` (shorter side resized to it, centre-cropped), and
``BatchAugment`` applies the same transforms to the whole batch after the transfer:

- RandomResizedCrop: scale ``U(scale_min, 1)`` of the area, aspect ratio log-uniform in
  ``[3/4, 4/3]``, torchvision's ten tries then the whole square; the crop, the flips and
  the rotation are one sampling grid per image and one ``grid_sample`` (bilinear) for the
  batch; corners a rotation uncovers are white, as ``RandomRotation(fill=WHITE)``;
- colour jitter: brightness, contrast and saturation factors ``U(1-j, 1+j)`` per image with
  torchvision's formulas (contrast about the image's mean grey, saturation about each
  pixel's grey), in a random order drawn once per batch (per image on the CPU);
- normalisation: ``(x / 255 - mean) / std``, as ``transforms.Normalize``.

One difference from the CPU pipeline: crops are drawn from the image's central square
rather than from the whole (non-square) image, since a batch needs one size.

Random parameters are drawn on the CPU, from ``generator`` or else torch's global RNG,
which the training loop reseeds at each batch position; the same seed therefore gives the
same augmentation on any device, and a resumed run repeats an uninterrupted one's.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from clibd.config import AugmentConfig

GREY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range
TRIES = 10  # RandomResizedCrop's attempts before it falls back to the whole image


def crop_boxes(n: int, side: int, scale_min: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``[n, 4]`` (top, left, height, width) crop boxes in a ``side``-square image, drawn as
    ``torchvision.transforms.v2.RandomResizedCrop.make_params`` draws them, for n images at once."""
    area = side * side * torch.empty(n, TRIES).uniform_(scale_min, 1.0, generator=generator)
    log_ratio = torch.empty(n, TRIES).uniform_(math.log(RATIO[0]), math.log(RATIO[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= side) & (h > 0) & (h <= side)
    first = torch.where(fits.any(1), fits.to(torch.int8).argmax(1), -1)  # first try that fits, -1 none
    rows = torch.arange(n)
    w = torch.where(first >= 0, w[rows, first.clamp(min=0)], float(side))
    h = torch.where(first >= 0, h[rows, first.clamp(min=0)], float(side))
    # randint(0, side - h + 1) per image: floor of a uniform draw over the valid offsets.
    top = (torch.rand(n, generator=generator) * (side - h + 1)).floor()
    left = (torch.rand(n, generator=generator) * (side - w + 1)).floor()
    return torch.stack([top, left, h, w], dim=1)


class BatchAugment(torch.nn.Module):
    """uint8 ``[B, 3, S, S]`` on any device -> float32 normalised ``[B, 3, image_size, image_size]``."""

    def __init__(self, image_size: int, augment: AugmentConfig, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if not 0 < augment.scale_min <= 1:
            raise ValueError(f"augment.scale_min must be in (0, 1], got {augment.scale_min}")
        self.image_size, self.augment = image_size, augment
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("grey", torch.tensor(GREY).view(1, 3, 1, 1), persistent=False)

    def _grid(self, n: int, side: int, generator: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling grid ``[n, size, size, 2]`` (normalised input coordinates) and the mask of
        output pixels outside the rotated crop (white), both on the CPU."""
        a, size = self.augment, self.image_size
        boxes = crop_boxes(n, side, a.scale_min, generator)
        top, left, h, w = boxes.unbind(1)
        # align_corners=False: pixel edges span [-1, 1], so a box maps to centre and half-size.
        centre = torch.stack([(2 * left + w) / side - 1, (2 * top + h) / side - 1], dim=1)
        half = torch.stack([w / side, h / side], dim=1)
        flip = torch.ones(n, 2)
        flip[:, 0] -= 2 * (torch.rand(n, generator=generator) < a.hflip).float()
        flip[:, 1] -= 2 * (torch.rand(n, generator=generator) < a.vflip).float()
        angle = torch.empty(n).uniform_(-a.rotate_degrees, a.rotate_degrees, generator=generator) * (math.pi / 180)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [n, 2, 2]
        lin = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1  # output pixel centres
        out = torch.stack(torch.meshgrid(lin, lin, indexing="xy"), dim=-1).view(1, -1, 2)  # (x, y)
        in_crop = torch.einsum("nij,npj->npi", rotation, out.expand(n, -1, -1)) * flip[:, None]
        outside = (in_crop.abs() > 1).any(-1).view(n, 1, size, size)
        grid = centre[:, None] + half[:, None] * in_crop
        return grid.view(n, size, size, 2), outside

    def _jitter(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Brightness, contrast, saturation on float ``x`` in [0, 255], per-image factors."""
        j, n = self.augment.color_jitter, x.shape[0]
        factors = torch.empty(3, n).uniform_(max(0.0, 1 - j), 1 + j, generator=generator).to(x.device)
        for op in torch.randperm(3, generator=generator).tolist():
            f = factors[op].view(n, 1, 1, 1)
            if op == 0:  # brightness: blend with black
                x = x * f
            elif op == 1:  # contrast: blend with the image's mean grey
                x = f * x + (1 - f) * (x * self.grey).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            else:  # saturation: blend with each pixel's grey
                x = f * x + (1 - f) * (x * self.grey).sum(1, keepdim=True)
            x = x.clamp(0, 255)
        return x

    def forward(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        square = images.ndim == 4 and images.shape[1] == 3 and images.shape[2] == images.shape[3]
        if images.dtype != torch.uint8 or not square:
            raise ValueError(f"BatchAugment takes uint8 [B, 3, S, S] images, got {images.dtype} {tuple(images.shape)}")
        n, side = images.shape[0], images.shape[2]
        grid, outside = self._grid(n, side, generator)
        # Sampled around 0 = white, so the zeros grid_sample pads with come out white.
        x = images.to(torch.float32) - 255
        x = F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False) + 255
        x = x.masked_fill(outside.to(x.device), 255.0)
        if self.augment.color_jitter > 0:
            x = self._jitter(x, generator)
        return (x / 255 - self.mean) / self.std
