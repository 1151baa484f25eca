"""Image bytes for decoding tests: good JPEGs and each fault the decoder must handle."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise_jpeg(width: int, height: int, seed: int) -> bytes:
    """A distinct textured JPEG (crops and flips of it differ)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), quality=90)


def truncated_jpeg() -> bytes:
    data = noise_jpeg(64, 48, seed=0)
    return data[: len(data) // 2]


def bomb_jpeg(width: int = 10000, height: int = 10000) -> bytes:
    """A tiny JPEG whose frame header (SOF0) claims ``width`` x ``height`` pixels."""
    data = bytearray(encode(Image.new("RGB", (8, 8), (10, 20, 30))))
    sof = data.index(b"\xff\xc0")
    # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)
