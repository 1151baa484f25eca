"""Specimen photographs: body plans inherited down the tree, drawn as cropped_256 JPEGs.

Every trait (body proportions, wings, legs, antennae, colours, banding, size) is a
latent value that drifts a lot between orders, less between families and genera, and
little between species, plus individual variation; a trait's value is its latent
squashed into a plausible range. The geometry of all specimens (rotated, scaled,
cropped to the insect as in BIOSCAN's cropped images) is computed in numpy at once;
per image only PIL's C drawing, blur and JPEG encoding run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import hsv_to_rgb
from PIL import Image, ImageDraw

from clibd.data.demo.tree import Tree, descend

# How a trait varies: SHAPE (proportions), COLOUR (hue, saturation, shade: individuals differ in them
# with age, preservation and light), PATTERN (banding: what identification keys, and photos, tell
# congeneric species apart by, steady within a species), POSTURE (size and the spread of the wings:
# individuals differ in them more than congeneric species do).
SHAPE, COLOUR, PATTERN, POSTURE = 0, 1, 2, 3
# name: (low, high, kind); each trait = low + (high - low) * sigmoid(latent).
TRAITS: dict[str, tuple[float, float, int]] = {
    "abdomen_len": (0.25, 0.8, SHAPE),
    "abdomen_wid": (0.04, 0.26, SHAPE),
    "thorax_len": (0.12, 0.35, SHAPE),
    "thorax_wid": (0.05, 0.2, SHAPE),
    "head_size": (0.04, 0.14, SHAPE),
    "eye_size": (0.0, 0.9, SHAPE),
    "waist": (0.0, 0.12, SHAPE),
    "wing_len": (0.0, 1.1, SHAPE),
    "wing_wid": (0.05, 0.45, SHAPE),
    "wing_angle": (0.05, 0.9, POSTURE),
    "wing_alpha": (0.05, 0.95, COLOUR),
    "hind_wing": (0.0, 1.0, SHAPE),
    "leg_len": (0.1, 0.7, SHAPE),
    "antenna_len": (0.03, 0.8, SHAPE),
    "stripes": (0.0, 5.99, PATTERN),
    "stripe_duty": (0.15, 0.7, PATTERN),
    "body_h": (0.0, 0.25, COLOUR),
    "body_s": (0.15, 0.95, COLOUR),
    "body_v": (0.08, 0.85, COLOUR),
    "pattern_h": (0.0, 0.7, COLOUR),
    "pattern_s": (0.05, 0.95, COLOUR),
    "pattern_v": (0.05, 0.95, COLOUR),
    "wing_h": (0.0, 0.7, COLOUR),
    "wing_s": (0.0, 0.7, COLOUR),
    "wing_v": (0.3, 0.95, COLOUR),
    "log_size": (np.log(80.0), np.log(450.0), POSTURE),  # body length in original-photo pixels
}
ORDER_STD = 1.6  # spread of order archetypes (latent units)
# Drift per family, genus, species, and the spread of individuals, by kind (latent units).
LEVEL_STD = {
    SHAPE: (0.8, 0.45, 0.22),
    COLOUR: (0.8, 0.45, 0.22),
    PATTERN: (0.8, 0.45, 0.45),
    POSTURE: (0.8, 0.45, 0.22),
}
INDIVIDUAL_STD = {SHAPE: 0.2, COLOUR: 0.3, PATTERN: 0.1, POSTURE: 0.4}
# Diagnostic characters, present or absent: dark wing markings, a thorax striped or a head and legs
# in the pattern colour, the abdomen spotted instead of banded. An order's archetype has each with
# CHARACTER_SHARE; a family, genus and species gains or loses each with CHARACTER_FLIP, so congeneric
# species most often differ in one or two of them (and in none now and then, as cryptic species do).
CHARACTERS = ("wing_band", "wing_tip", "thorax_stripes", "abdomen_spots", "pale_legs", "pale_head")
CHARACTER_SHARE = 0.35
CHARACTER_FLIP = (0.25, 0.15, 0.15)

SHORT_SIDE = 256
MAX_ASPECT = 1.8
ORIGINAL_AREA = 1024 * 768
_MARGIN = 0.08  # crop margin around the insect, fraction of its extent
_ABDOMEN_POINTS = 12
_MAX_BANDS = 5
_ELLIPSE_POINTS = 16
# Images are drawn at 45-80 % of their size and enlarged: soft focus that varies per photo.
_MAX_RENDER_SCALE = 0.8


def body_traits(rng: np.random.Generator, tree: Tree, specimen_species: np.ndarray) -> dict[str, np.ndarray]:
    """Trait values per specimen, inherited order > family > genus > species > individual, and the
    characters (bool) of each specimen's species."""
    low, high, kind = (np.array(column) for column in zip(*TRAITS.values()))
    level_std = np.array([LEVEL_STD[k] for k in kind]).T  # [level, trait]
    orders = rng.normal(0.0, ORDER_STD, (len(tree.orders), len(TRAITS)))
    species = descend(tree, orders, lambda z, level: z + rng.normal(0.0, 1.0, z.shape) * level_std[level])
    individual = np.array([INDIVIDUAL_STD[k] for k in kind])
    latent = species[specimen_species] + rng.normal(0.0, 1.0, (len(specimen_species), len(TRAITS))) * individual
    values = low + (high - low) / (1.0 + np.exp(-latent))
    archetypes = rng.random((len(tree.orders), len(CHARACTERS))) < CHARACTER_SHARE
    characters = descend(tree, archetypes, lambda c, level: c ^ (rng.random(c.shape) < CHARACTER_FLIP[level]))
    return dict(zip(TRAITS, values.T)) | dict(zip(CHARACTERS, characters[specimen_species].T))


@dataclass(frozen=True)
class Drawing:
    """Everything needed to draw N specimens, in pixel coordinates of each image."""

    size: np.ndarray  # [N, 2] width, height
    # abdomen [N,P,2], bands [N,B,Q,2], spots [N,B,2,E,2], thorax / head [N,E,2], eyes / thorax_stripes
    # [N,2,E,2], wings [N,4,E,2], wing_band / wing_tip [N,2,E,2] (fore wings) (polygons); limbs [N,8,3,2]
    # (six legs, two antennae), petiole [N,1,2,2] (polylines)
    parts: dict[str, np.ndarray]
    band_on: np.ndarray  # [N, B]
    wing_on: np.ndarray  # [N, 4]
    marked: dict[str, np.ndarray]  # wing_band, wing_tip, thorax_stripes, abdomen_spots -> [N] bool
    colours: dict[str, np.ndarray]  # part -> [N, 3] uint8 (wings: [N, 4] RGBA)
    line_width: np.ndarray  # [N]
    scale_factor: np.ndarray  # [N] original crop / cropped_256
    area_fraction: np.ndarray  # [N] crop area / original photo area
    measurement: np.ndarray  # [N] organism pixels in the original photo


def _ellipse(cx: np.ndarray, cy: np.ndarray, a: np.ndarray, b: np.ndarray, angle: np.ndarray) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, _ELLIPSE_POINTS, endpoint=False)
    x, y = a[..., None] * np.cos(t), b[..., None] * np.sin(t)
    c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]
    return np.stack([cx[..., None] + c * x - s * y, cy[..., None] + s * x + c * y], axis=-1)


def _radius(width: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Abdomen half-width at fraction ``s`` of its length: a tear drop, widest near the front."""
    return width * np.sin(np.pi * np.clip(s, 0, 1) ** 0.7) ** 0.8 + 0.01


def _outline(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Closed outline from an axis profile: upper side forward, lower side back."""
    return np.concatenate([np.stack([x, r], -1), np.stack([x, -r], -1)[..., ::-1, :]], axis=-2)


def _hsv(traits: dict[str, np.ndarray], prefix: str, shade: float = 1.0) -> np.ndarray:
    value = np.clip(traits[f"{prefix}_v"] * shade, 0, 1)
    hsv = np.stack([traits[f"{prefix}_h"] % 1.0, traits[f"{prefix}_s"], value], -1)
    return np.round(hsv_to_rgb(hsv) * 255).astype(np.uint8)


def _area(polygons: np.ndarray) -> np.ndarray:
    """Shoelace area of polygons [..., P, 2]."""
    x, y = polygons[..., 0], polygons[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y, -1))


def _along_wing(
    x: np.ndarray, y: np.ndarray, angle: np.ndarray, length: np.ndarray, width: np.ndarray, f: float, a: float, b: float
) -> np.ndarray:
    """An ellipse on a wing based at (x, y) pointing along ``angle``: centred at fraction ``f`` of its
    length, with semi-axes ``a`` x its length and ``b`` x its half-width (the wing itself: 0.5, 0.5, 1)."""
    cx, cy = x + np.cos(angle) * length * f, y + np.sin(angle) * length * f
    return _ellipse(cx, cy, a * length + 1e-3, b * width / 2 + 1e-3, angle)


def _body(t: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Head, eyes, thorax (and its stripes), banded (or spotted) abdomen and wings (and their
    markings) in body units (head forward along +x), with which bands and wings are present."""
    zeros = np.zeros(len(t["abdomen_len"]))
    half_thorax = t["thorax_len"] / 2
    head_x = half_thorax + 0.8 * t["head_size"]
    eye_r = np.maximum(t["eye_size"] * t["head_size"] * 0.5, 1e-3)
    parts = {
        "thorax": _ellipse(zeros, zeros, half_thorax, t["thorax_wid"], zeros),
        "head": _ellipse(head_x, zeros, t["head_size"], 0.85 * t["head_size"], zeros),
        "eyes": np.stack(
            [
                _ellipse(head_x + 0.3 * t["head_size"], side * 0.55 * t["head_size"], eye_r, 0.8 * eye_r, zeros)
                for side in (1, -1)
            ],
            1,
        ),
        "thorax_stripes": np.stack(
            [
                _ellipse(zeros, side * 0.45 * t["thorax_wid"], 0.75 * half_thorax, 0.17 * t["thorax_wid"], zeros)
                for side in (1, -1)
            ],
            1,
        ),
    }
    # Abdomen: a tear-drop profile behind the thorax (and the waist), banded across.
    front = -0.9 * half_thorax - t["waist"]
    parts["petiole"] = np.stack([np.stack([-half_thorax, zeros], -1), np.stack([front - 0.02, zeros], -1)], 1)[:, None]
    u = np.linspace(0.0, 1.0, _ABDOMEN_POINTS)
    parts["abdomen"] = _outline(front[:, None] - u * t["abdomen_len"][:, None], _radius(t["abdomen_wid"][:, None], u))
    n_bands = np.floor(t["stripes"]).astype(int)
    centre = (np.arange(_MAX_BANDS)[None, :] + 0.5) / np.maximum(n_bands, 1)[:, None]
    half = t["stripe_duty"][:, None] / np.maximum(n_bands, 1)[:, None] / 2
    s = centre[..., None] + half[..., None] * np.linspace(-1.0, 1.0, 5)
    length, width = t["abdomen_len"][:, None, None], t["abdomen_wid"][:, None, None]
    parts["bands"] = _outline(front[:, None, None] - s * length, _radius(width, s))
    # Spots: a pair at each band's place, for species whose abdomen is spotted instead.
    spot_x, spot_r = front[:, None] - centre * length[..., 0], 0.32 * _radius(width[..., 0], centre)
    parts["spots"] = np.stack(
        [_ellipse(spot_x, side * 1.4 * spot_r, spot_r, spot_r, 0 * spot_r) for side in (1, -1)], 2
    )
    band_on = np.arange(_MAX_BANDS)[None, :] < n_bands[:, None]
    # Wings: fore pair (and hind pair, smaller) swept back from the thorax.
    # Markings of the fore wings: a dark band across, beyond the middle, and a dark tip.
    wings, marks = [], {"wing_band": [], "wing_tip": []}
    for scale, base_x, sweep in ((1.0, 0.2, 1.0), (0.75, -0.4, 1.35)):
        wing_len, wing_wid = t["wing_len"] * scale, t["wing_wid"] * scale
        for side in (1, -1):
            angle = np.pi - side * t["wing_angle"] * sweep
            base = (base_x * half_thorax, side * 0.6 * t["thorax_wid"], angle, wing_len, wing_wid)
            wings.append(_along_wing(*base, 0.5, 0.5, 1.0))
            if scale == 1.0:
                marks["wing_band"].append(_along_wing(*base, 0.62, 0.09, 0.85))
                marks["wing_tip"].append(_along_wing(*base, 0.87, 0.1, 0.55))
    parts["wings"] = np.stack(wings, 1)
    parts |= {name: np.stack(polygons, 1) for name, polygons in marks.items()}
    winged = t["wing_len"] > 0.15
    wing_on = np.stack([winged, winged, winged & (t["hind_wing"] > 0.45), winged & (t["hind_wing"] > 0.45)], 1)
    return parts, band_on, wing_on


def _limbs(rng: np.random.Generator, t: dict[str, np.ndarray]) -> np.ndarray:
    """Six two-segment legs splayed from the thorax and two antennae, with individual jitter."""
    n = len(t["leg_len"])
    half_thorax = t["thorax_len"] / 2
    side = np.array([1, -1])[None, None, :]
    spread = np.array([0.7, 0.0, -0.7])[None, :, None] + rng.normal(0, 0.15, (n, 3, 2))
    a1 = side * (np.pi / 2 - spread)
    a2 = a1 + side * np.array([0.6, 0.1, -0.6])[None, :, None] + rng.normal(0, 0.2, (n, 3, 2))
    seg = t["leg_len"][:, None, None, None] / 2
    base_x = np.array([0.6, 0.0, -0.6])[None, :, None] * half_thorax[:, None, None] * np.ones_like(a1)
    base_y = side * 0.7 * t["thorax_wid"][:, None, None] * np.ones_like(a1)
    p0 = np.stack([base_x, base_y], -1)
    p1 = p0 + seg * np.stack([np.cos(a1), np.sin(a1)], -1)
    p2 = p1 + seg * np.stack([np.cos(a2), np.sin(a2)], -1)
    legs = np.stack([p0, p1, p2], -2).reshape(n, 6, 3, 2)
    angle = np.array([0.45, -0.45])[None, :] + rng.normal(0, 0.1, (n, 2))
    head_tip = half_thorax + 1.5 * t["head_size"]
    q0 = np.stack([head_tip[:, None] * np.ones((1, 2)), np.array([0.3, -0.3])[None, :] * t["head_size"][:, None]], -1)
    step = t["antenna_len"][:, None, None] / 2
    q1 = q0 + step * np.stack([np.cos(angle), np.sin(angle)], -1)
    q2 = q1 + step * np.stack([np.cos(1.4 * angle), np.sin(1.4 * angle)], -1)
    return np.concatenate([legs, np.stack([q0, q1, q2], -2)], 1)


def _pose(
    rng: np.random.Generator, parts: dict[str, np.ndarray], wing_on: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Rotate each specimen at random (they lie loose in the well) and crop tight around it
    with the short side 256 px: pixel coordinates, image sizes, and body units per short side."""
    n = len(wing_on)
    theta = rng.uniform(0, 2 * np.pi, n)
    rot = np.stack([np.stack([np.cos(theta), -np.sin(theta)], -1), np.stack([np.sin(theta), np.cos(theta)], -1)], -2)
    posed = {k: np.einsum("nij,n...j->n...i", rot, v) for k, v in parts.items()}
    # Bands and eyes lie inside the body; a missing wing is collapsed onto the origin.
    outer = [posed[k].reshape(n, -1, 2) for k in ("abdomen", "thorax", "head", "limbs")]
    extent = np.concatenate(outer + [np.where(wing_on[:, :, None, None], posed["wings"], 0).reshape(n, -1, 2)], 1)
    lo, hi = extent.min(1), extent.max(1)
    span = (hi - lo) * (1 + 2 * _MARGIN)
    # A very elongated insect gets more background, never a cut.
    long_units = span.max(1)
    short_units = np.maximum(span.min(1), long_units / MAX_ASPECT)
    px = SHORT_SIDE / short_units
    long_px = np.round(long_units * px)
    short_px = np.full(n, SHORT_SIDE)
    landscape = (span[:, 0] >= span[:, 1])[:, None]
    size = np.where(landscape, np.stack([long_px, short_px], 1), np.stack([short_px, long_px], 1)).astype(int)
    offset = size / 2 - (lo + hi) / 2 * px[:, None]
    pixels = {
        k: v * px.reshape((n,) + (1,) * (v.ndim - 1)) + offset.reshape((n,) + (1,) * (v.ndim - 2) + (2,))
        for k, v in posed.items()
    }
    return pixels, size, short_units


def plan_drawings(rng: np.random.Generator, t: dict[str, np.ndarray]) -> Drawing:
    """Shapes, colours, pose and crop of every specimen, plus the size columns of the metadata."""
    parts, band_on, wing_on = _body(t)
    parts["limbs"] = _limbs(rng, t)
    pixels, size, short_units = _pose(rng, parts, wing_on)
    body_length = np.exp(t["log_size"])  # original-photo pixels per body unit
    scale_factor = short_units * body_length / SHORT_SIDE
    body_area = sum(_area(parts[k]) for k in ("abdomen", "thorax", "head")) + (_area(parts["wings"]) * wing_on).sum(1)
    eye = {"eye_h": np.full(len(size), 0.02), "eye_s": np.full(len(size), 0.8), "eye_v": 0.2 + 0.5 * t["eye_size"]}
    wing_alpha = np.round(50 + 200 * t["wing_alpha"])[:, None].astype(np.uint8)
    pattern = _hsv(t, "pattern")
    # Wing markings: the body's colour, darkened, nearly opaque.
    marks = np.concatenate([_hsv(t, "body", 0.35), np.full((len(size), 1), 230, dtype=np.uint8)], 1)
    return Drawing(
        size=size,
        parts=pixels,
        band_on=band_on,
        wing_on=wing_on,
        marked={k: t[k] for k in ("wing_band", "wing_tip", "thorax_stripes", "abdomen_spots")},
        colours={
            "body": _hsv(t, "body"),
            "thorax": _hsv(t, "body", 0.8),
            "head": np.where(t["pale_head"][:, None], pattern, _hsv(t, "body", 0.65)),
            "limbs": np.where(t["pale_legs"][:, None], pattern, _hsv(t, "body", 0.55)),
            "pattern": pattern,
            "eyes": _hsv(eye, "eye"),
            "wings": np.concatenate([_hsv(t, "wing"), wing_alpha], 1),
            "marks": marks,
        },
        line_width=np.maximum(1, np.round(SHORT_SIDE / short_units * 0.012)).astype(int),
        scale_factor=scale_factor,
        area_fraction=np.minimum(np.prod(size, 1) * scale_factor**2 / ORIGINAL_AREA, 1.0),
        measurement=body_area * body_length**2,
    )


def backgrounds(rng: np.random.Generator, count: int = 12) -> list[Image.Image]:
    """Pale well-plate backgrounds: tint, soft gradient, grain and dust, larger than any image."""
    side = int(np.ceil(SHORT_SIDE * MAX_ASPECT * _MAX_RENDER_SCALE)) + 1
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(count):
        tint = rng.uniform(195, 240) + rng.normal(0, 2.5, 3)
        gradient = 18 * (rng.uniform(-1, 1) * (xx - 0.5) + rng.uniform(-1, 1) * (yy - 0.5))
        vignette = -25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
        grain = rng.normal(0, 5, (side, side, 1)) + rng.normal(0, 2, (side, side, 3))
        dust = (rng.random((side, side, 1)) < 0.0008) * rng.uniform(-90, -30)
        pixels = tint + (gradient + vignette)[..., None] + grain + dust
        out.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return out


def draw(d: Drawing, i: int, background: Image.Image, corner: tuple[int, int], scale: float) -> Image.Image:
    """Image ``i`` of the plan: limbs, body, banding, eyes and translucent wings drawn on a
    background crop at ``scale`` of the final size, then enlarged (soft focus, anti-aliasing)."""
    w, h = d.size[i]
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = background.crop((corner[0], corner[1], corner[0] + small[0], corner[1] + small[1]))
    pen = ImageDraw.Draw(image, "RGBA")
    c = {k: tuple(v[i].tolist()) for k, v in d.colours.items()}

    def flat(points: np.ndarray) -> list[float]:
        return (points * scale).ravel().tolist()

    part = {k: v[i] for k, v in d.parts.items()}
    width = max(1, round(float(d.line_width[i]) * scale))
    for limb in part["limbs"]:
        pen.line(flat(limb), fill=c["limbs"], width=width, joint="curve")
    pen.line(flat(part["petiole"]), fill=c["thorax"], width=2 * width)
    pen.polygon(flat(part["abdomen"]), fill=c["body"])
    marked = {k: bool(v[i]) for k, v in d.marked.items()}
    for polygon in part["spots"][d.band_on[i]].reshape(-1, _ELLIPSE_POINTS, 2) if marked["abdomen_spots"] else ():
        pen.polygon(flat(polygon), fill=c["pattern"])
    for band in part["bands"][d.band_on[i]] if not marked["abdomen_spots"] else ():
        pen.polygon(flat(band), fill=c["pattern"])
    pen.polygon(flat(part["thorax"]), fill=c["thorax"])
    for stripe in part["thorax_stripes"] if marked["thorax_stripes"] else ():
        pen.polygon(flat(stripe), fill=c["pattern"])
    pen.polygon(flat(part["head"]), fill=c["head"])
    for eye in part["eyes"]:
        pen.polygon(flat(eye), fill=c["eyes"])
    for wing in part["wings"][d.wing_on[i]]:
        pen.polygon(flat(wing), fill=c["wings"])
    for mark in ("wing_band", "wing_tip"):
        for polygon in part[mark][d.wing_on[i, :2]] if marked[mark] else ():
            pen.polygon(flat(polygon), fill=c["marks"])
    return image.resize((int(w), int(h)), Image.Resampling.BILINEAR)


def write_images(rng: np.random.Generator, d: Drawing, paths: list[Path], quality: int = 90) -> None:
    """Draw and save every image (folders must exist)."""
    bank = backgrounds(rng)
    n = len(paths)
    choice = rng.integers(0, len(bank), n)
    scale = rng.uniform(0.45, _MAX_RENDER_SCALE, n)
    side = bank[0].size[0]
    corners = (rng.random((n, 2)) * (side - d.size * scale[:, None])).astype(int)
    for i, path in enumerate(paths):
        draw(d, i, bank[choice[i]], tuple(corners[i]), float(scale[i])).save(path, quality=quality)
