"""Image decoding faults and the evaluation / training transforms."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from clibd.config import AugmentConfig, DataConfig
from clibd.data.transforms import ImageDecodeError, build_transform, decode_image, decode_side
from tests.data_paths import REAL_IMAGES
from tests.helpers.image_faults import bomb_jpeg, encode, noise_jpeg, truncated_jpeg

MEAN = torch.tensor(DataConfig().mean)
STD = torch.tensor(DataConfig().std)


def test_grey_jpeg_becomes_rgb_with_equal_channels():
    img = decode_image(encode(Image.new("L", (20, 10), 100), quality=95), "grey.jpg")
    assert img.mode == "RGB" and img.size == (20, 10)
    assert np.array(img).min() >= 98 and np.array(img).max() <= 102
    assert (np.array(img)[..., 0] == np.array(img)[..., 2]).all()


def test_png_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))  # transparent black
    rgba.putpixel((1, 0), (200, 0, 0, 255))  # opaque red
    img = decode_image(encode(rgba, "PNG"), "alpha.png")
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (200, 0, 0)


def test_palette_png_with_transparency_is_composited_on_white():
    pal = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    pal.putpixel((1, 0), (0, 0, 255, 255))
    img = decode_image(encode(pal.convert("P"), "PNG", transparency=0), "palette.png")
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grey_png_is_rescaled_not_clipped():
    grey16 = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    img = decode_image(encode(grey16, "PNG"), "grey16.png")
    assert np.array(img)[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg_decodes_to_its_rgb_colour():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    img = decode_image(encode(cmyk, quality=95), "cmyk.jpg")
    assert img.mode == "RGB"
    r, g, b = img.getpixel((8, 8))
    assert r > 240 and g < 15 and b < 15


def test_one_pixel_image_gives_a_full_size_tensor():
    img = decode_image(encode(Image.new("RGB", (1, 1), (255, 255, 255))), "dot.jpg", min_side=224)
    assert img.size == (1, 1)
    x = build_transform(32)(img)
    assert x.shape == (3, 32, 32)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (truncated_jpeg(), "truncated image file .*: it was cut short when copied or saved"),
        (b"not an image at all", "not an image file, or a format PIL cannot open"),
    ],
    ids=["zero-bytes", "truncated-jpeg", "garbage"],
)
def test_undecodable_bytes_raise_naming_the_ref(data, message):
    with pytest.raises(ImageDecodeError, match=rf"images/bad/X1\.jpg.*{message}"):
        decode_image(data, "images/bad/X1.jpg")


def test_decompression_bomb_header_is_refused_before_decoding():
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"bomb\.jpg: 10000x10000 = 100000000 pixels exceeds the limit"):
        decode_image(bomb_jpeg(), "bomb.jpg")
    assert time.perf_counter() - start < 0.5  # refused from the header, not decoded


def test_jpeg_draft_decodes_at_the_smallest_scale_that_covers_min_side():
    data = noise_jpeg(1024, 768, seed=1)
    assert decode_image(data, "a.jpg").size == (1024, 768)
    assert decode_image(data, "a.jpg", min_side=224).size == (512, 384)  # 768 // 224 = 3 -> scale 1/2
    assert decode_image(data, "a.jpg", min_side=90).size == (128, 96)  # scale 1/8
    assert decode_image(data, "a.jpg", min_side=400).size == (1024, 768)  # 1/2 would give 384 < 400


def test_decode_side_covers_the_smallest_random_crop():
    assert decode_side(224, None) == 224
    assert decode_side(224, AugmentConfig(enabled=False)) == 224
    assert decode_side(224, AugmentConfig(scale_min=0.25)) == 448


def test_eval_transform_normalises_with_bioscan_statistics_deterministically():
    img = Image.new("RGB", (40, 30), (255, 255, 255))
    x = build_transform(16)(img)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    expected = ((1 - MEAN) / STD)[:, None, None].expand(3, 16, 16)
    torch.testing.assert_close(x, expected)
    textured = decode_image(noise_jpeg(40, 30, seed=2), "t.jpg")
    tf = build_transform(16)
    assert torch.equal(tf(textured), tf(textured))


def test_eval_transform_resizes_shorter_side_then_center_crops():
    # Left half black, right half white, 40x20: the center crop of the 32x16 resize keeps both halves.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, 20:] = 255
    x = build_transform(16, mean=[0, 0, 0], std=[1, 1, 1])(Image.fromarray(arr))
    assert x.shape == (3, 16, 16)
    assert x[:, :, :6].max() < 0.05 and x[:, :, 10:].min() > 0.95


def test_train_augmentation_differs_between_calls_and_follows_the_seed():
    img = decode_image(noise_jpeg(64, 48, seed=3), "t.jpg")
    tf = build_transform(32, augment=AugmentConfig(scale_min=0.5, hflip=0.5, color_jitter=0.2))
    torch.manual_seed(0)
    a, b = tf(img), tf(img)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(tf(img), a)


def test_disabled_augmentation_is_the_eval_transform():
    img = decode_image(noise_jpeg(64, 48, seed=4), "t.jpg")
    assert torch.equal(build_transform(32, augment=AugmentConfig(enabled=False))(img), build_transform(32)(img))


def test_rotation_fills_corners_white_not_black():
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    tf = build_transform(32, augment=AugmentConfig(scale_min=1.0, hflip=0, rotate_degrees=45, color_jitter=0))
    torch.manual_seed(0)
    x = torch.stack([tf(white) for _ in range(4)])
    expected = ((1 - MEAN) / STD)[None, :, None, None]
    torch.testing.assert_close(x, expected.expand_as(x), atol=1e-4, rtol=0)


def test_bad_scale_min_is_rejected():
    with pytest.raises(ValueError, match="scale_min"):
        build_transform(32, augment=AugmentConfig(scale_min=0))


@pytest.mark.skipif(not REAL_IMAGES.is_dir(), reason=f"real photos folder {REAL_IMAGES} is absent")
def test_real_bioscan_photo_decodes_fast_to_the_right_tensor():
    path = sorted(REAL_IMAGES.glob("valid_*.jpg"))[0]
    data = path.read_bytes()
    assert decode_image(data, str(path)).size == (1024, 768)
    img = decode_image(data, str(path), min_side=224)
    assert img.size == (512, 384)
    x = build_transform(224)(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and -6 < x.min() < x.max() < 3
