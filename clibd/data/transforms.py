"""Image decoding (bytes -> RGB PIL image) and the evaluation / training transforms.

Decoding rules:
  - grey-scale, palette, CMYK and 16-bit images are converted to RGB; images with
    transparency are composited on white (the BIOSCAN background), not on black;
  - JPEGs decode in PIL's draft mode at the smallest DCT scale (1/2, 1/4, 1/8) that still
    covers the size the transform needs, so 1024x768 originals decode several times faster
    (``data.image_pipeline: original`` decodes them whole, as the published code does);
  - the EXIF orientation is applied (a photo tagged "rotated" is turned upright); an animation
    (GIF, WebP, multi-page TIFF) gives its first frame;
  - empty, unidentifiable or truncated data raises ``ImageDecodeError`` naming the ref and
    saying what is wrong in words (``problem``);
  - an image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels is refused before
    any pixel is decoded (decompression-bomb guard).

Decoding needs PIL alone; the views use torchvision, imported when the first one is built
(:func:`_torchvision_v2`), so a command without photos never loads it.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Sequence

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from clibd.config import AugmentConfig, DataConfig, ImagePipeline

if TYPE_CHECKING:
    from torchvision.transforms import v2

# 50 megapixels: ~60x a BIOSCAN original (1024x768) and above any camera photo a user
# would classify; a decoded RGB image this size already takes 150 MB.
MAX_IMAGE_PIXELS = 50_000_000

WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """Image bytes that cannot be turned into an RGB image: the message names the ref, ``problem``
    says what is wrong in words (for a row that already names its file)."""

    def __init__(self, ref: str, problem: str) -> None:
        super().__init__(f"image {ref}: {problem}")
        self.problem = problem


def decode_image(data: bytes, ref: str, min_side: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``data`` into an RGB image, turned upright by its EXIF orientation (the first frame
    of an animation); ``min_side`` lets JPEGs decode at reduced size.

    With ``min_side`` the result's shorter side is at least ``min_side`` (or the original's,
    if smaller), never scaled below what the transform needs.
    """
    if not data:
        raise ImageDecodeError(ref, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL's own bomb limit is looser than ours; its warning would only duplicate our check.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                ref,
                f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                "(decompression-bomb guard)",
            )
        if min_side is not None:
            img.draft("RGB", (min_side, min_side))  # no-op for formats other than JPEG
        img.load()
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:  # a camera's "rotate 90" tag: turn it upright
            img = ImageOps.exif_transpose(img)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(ref, _problem(err, len(data))) from None
    return _to_rgb(img)


def _problem(err: Exception, size: int) -> str:
    """What PIL's exception means, in words, without the object reprs it carries."""
    if isinstance(err, UnidentifiedImageError):
        return f"not an image file, or a format PIL cannot open ({size:,} bytes)"
    if "truncated" in str(err).lower():
        return f"truncated image file ({size:,} bytes): it was cut short when copied or saved"
    if isinstance(err, Image.DecompressionBombError):
        return "too many pixels (decompression-bomb guard)"
    detail = re.sub(r"<[^<>]* at 0x[0-9a-f]+>", "the data", str(err)) or type(err).__name__
    return f"damaged image data ({detail})"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: rescale to 8 bits rather than clipping everything above 255.
        scale = 1 / 256 if img.mode.startswith("I;16") else 1 / 65536
        img = img.point(lambda v: v * scale).convert("L")
    return img.convert("RGB")


def decode_side(
    image_size: int, augment: AugmentConfig | None, eval_resize: int | None = None, pipeline: ImagePipeline = "clibd"
) -> int | None:
    """Shorter side an image must keep before the transform so nothing is upsampled; None: the
    whole image (``pipeline="original"``: the published code resizes the fully decoded image).

    The evaluation view resizes the shorter side to ``eval_resize`` (default ``image_size``).
    RandomResizedCrop takes a crop of ``scale_min`` of the area at smallest, i.e. a side
    ``sqrt(scale_min)`` of the original's, and scales it up to ``image_size``; after a
    ``resize_before_crop`` the image is that size anyway, so decoding it larger gains nothing.
    """
    if pipeline == "original":
        return None
    if augment is None or not augment.enabled:
        return eval_resize or image_size
    if augment.resize_before_crop:
        return augment.resize_before_crop
    return math.ceil(image_size / math.sqrt(augment.scale_min))


class ToUnitFloat(torch.nn.Module):
    """uint8 image ``[3, H, W]`` -> float32 ``x / 255``: the arithmetic of torchvision's ``ToTensor``,
    which the published code puts first (``bioscanclip/util/dataset.py``, lines 185-222)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.to(torch.float32).div(255)


def _torchvision_v2() -> ModuleType:
    """torchvision's transforms, imported when the first view is built, not with this module. Its
    import costs about a second on two cores and, through torchvision's detection ops, loads
    torch._dynamo; barcode-only commands import this module for decoding and must not pay that
    (``clibd.models.registry`` lists every import clibd defers, and why)."""
    from torchvision.transforms import v2

    return v2


def build_pil_transform(
    image_size: int,
    augment: AugmentConfig | None = None,
    eval_resize: int | None = None,
    pipeline: ImagePipeline = "clibd",
) -> v2.Compose:
    """PIL RGB image -> tensor ``[3, image_size, image_size]`` (geometry and colour only): uint8,
    or with ``pipeline="original"`` float32 in [0, 1], converted first and resized, cropped and
    rotated as floats, as the published code composes its transforms.

    ``augment`` None (or disabled) gives the deterministic evaluation view: resize the
    shorter side to ``eval_resize`` (default ``image_size``) and center-crop ``image_size``.
    Otherwise: optionally resize the shorter side to ``augment.resize_before_crop``, then
    RandomResizedCrop with ``scale=(augment.scale_min, 1)``, then the configured flips,
    rotation (uncovered corners filled with grey level ``rotate_fill``) and colour jitter.
    The published system's training view is ``resize_before_crop=256, scale_min=0.08,
    hflip=0.5, vflip=0.5, rotate_degrees=45, rotate_fill=0, color_jitter=0``.
    """
    v2 = _torchvision_v2()
    as_float = pipeline == "original"
    if augment is None or not augment.enabled:
        resize = eval_resize or image_size
        if resize < image_size:
            raise ValueError(f"data.eval_resize={resize} is smaller than the {image_size}-px crop")
        steps: list[v2.Transform] = [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
    else:
        if not 0 < augment.scale_min <= 1:
            raise ValueError(f"augment.scale_min must be in (0, 1], got {augment.scale_min}")
        steps = [v2.Resize(augment.resize_before_crop, antialias=True)] if augment.resize_before_crop else []
        steps.append(v2.RandomResizedCrop(image_size, scale=(augment.scale_min, 1.0), antialias=True))
        if augment.hflip > 0:
            steps.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.vflip > 0:
            steps.append(v2.RandomVerticalFlip(augment.vflip))
        if augment.rotate_degrees > 0:
            if not 0 <= augment.rotate_fill <= 255:
                raise ValueError(f"augment.rotate_fill must be a grey level in [0, 255], got {augment.rotate_fill}")
            fill = augment.rotate_fill / 255 if as_float else augment.rotate_fill
            steps.append(v2.RandomRotation(augment.rotate_degrees, fill=(fill,) * 3))
        if augment.color_jitter > 0:
            j = augment.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    if as_float:
        return v2.Compose([v2.PILToTensor(), ToUnitFloat(), *steps])
    return v2.Compose([*steps, v2.PILToTensor()])


class Normalize(torch.nn.Module):
    """uint8 image(s) ``[..., 3, H, W]`` -> float32 ``(x / 255 - mean) / std``, as one float
    copy and an in-place multiply-add; float image(s) in [0, 1] (``pipeline="original"``) ->
    ``(x - mean) / std``, which leaves them exactly as they are for mean 0 and std 1."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1 / (255 * self.std)
        self.shift = -self.mean / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.is_floating_point():
            return images.sub(self.mean).div_(self.std)
        return images.to(torch.float32).mul_(self.scale).add_(self.shift)


def build_normalize(mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Normalize:
    """uint8 image(s) ``[..., 3, H, W]`` -> float32 normalised; BIOSCAN-5M statistics by default.

    Works on a whole batch: the dataset applies it once per batch, since a small per-image
    float op costs more in thread start-up than in arithmetic. One float buffer, not
    ToDtype + Normalize's two: on the loaded 2-core VM the second fresh 19 MB buffer per
    batch of 32 cost ~5 ms/image in page faults, ~50x the arithmetic (bench/pipeline.py).
    """
    defaults = DataConfig()
    mean = list(defaults.mean if mean is None else mean)
    std = list(defaults.std if std is None else std)
    return Normalize(mean, std)


def build_transform(
    image_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    augment: AugmentConfig | None = None,
    eval_resize: int | None = None,
) -> v2.Compose:
    """PIL RGB image -> normalised float32 tensor ``[3, image_size, image_size]``
    (``build_pil_transform`` then ``build_normalize``)."""
    return _torchvision_v2().Compose([build_pil_transform(image_size, augment, eval_resize), build_normalize(mean, std)])
