"""Synthetic shapes benchmark: seeded RGB images with exact per-pixel object masks.

Each image holds one object (single mode) or two objects of different classes (pair mode) on a
cluttered background: a gradient, stripes or flat field of random colour with pixel noise, and
plain-filled distractors (ellipses, blobs, line segments) that belong to no class. A class is a
shape together with a texture (see `CLASSES`); position, scale, rotation and both colours of an
object, and everything in the background, are drawn independently of the class, so neither colour
nor background tells the class.

Geometry is evaluated at pixel centres without anti-aliasing, so an object's mask is exactly the set
of pixels it paints (in pair mode, the pixels it still shows after the second object is drawn).

Example i of a call with seed s depends only on (s, i) (and the mode): its generator is
`np.random.default_rng((s, mode, i))`. Any slice can therefore be generated on its own, and the
named splits (`SPLITS`) are disjoint by seed.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable

import numpy as np

# All shapes have area AREA·s² for object scale s (pixels), so the number of object pixels
# carries no class information; each shape's size constants below follow from that.
AREA = 2.0

Shape = Callable[[np.ndarray, np.ndarray], np.ndarray]
Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ---------------------------------------------------------------- shapes: (u, v) in units of s → bool


def _polygon_inradius(n: int) -> float:
    """Inradius of the regular n-gon of area AREA (area = n·ρ²·tan(π/n))."""
    return math.sqrt(AREA / (n * math.tan(math.pi / n)))


def _regular_polygon(n: int) -> Shape:
    """Regular n-gon with one edge normal along -v (a flat side), inradius from the area."""
    rho = _polygon_inradius(n)
    normals = [(-math.pi / 2 + 2 * math.pi * k / n) for k in range(n)]

    def shape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        inside = np.ones(u.shape, bool)
        for phi in normals:
            inside &= u * math.cos(phi) + v * math.sin(phi) <= rho
        return inside

    return shape


DISC_R = math.sqrt(AREA / math.pi)
RING_INNER = 0.5  # inner / outer radius
RING_R = math.sqrt(AREA / (math.pi * (1 - RING_INNER**2)))
PLUS_WIDTH = 0.3  # arm half-width / arm half-length
PLUS_L = math.sqrt(AREA / (8 * PLUS_WIDTH - 4 * PLUS_WIDTH**2))
STAR_INNER = 0.45  # inner / outer vertex radius; area = 5·R·r·sin 36°
STAR_R = math.sqrt(AREA / (5 * STAR_INNER * math.sin(math.pi / 5)))
CRESCENT_SHIFT = 0.6  # offset of the cut-out disc / radius
_LENS = 2 * math.acos(CRESCENT_SHIFT / 2) - CRESCENT_SHIFT / 2 * math.sqrt(4 - CRESCENT_SHIFT**2)
CRESCENT_R = math.sqrt(AREA / (math.pi - _LENS))
DIAMOND_RATIO = 0.6  # short / long half-diagonal
DIAMOND_A = math.sqrt(AREA / (2 * DIAMOND_RATIO))
FRAME_INNER = 0.5  # inner / outer half-side
FRAME_A = math.sqrt(AREA / (4 * (1 - FRAME_INNER**2)))


def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= DISC_R**2


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u * u + v * v
    return (r2 <= RING_R**2) & (r2 >= (RING_INNER * RING_R) ** 2)


def _plus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    w = PLUS_WIDTH * PLUS_L
    return ((au <= w) & (av <= PLUS_L)) | ((av <= w) & (au <= PLUS_L))


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Five-pointed star: fold the angle into one half-spike, then test against its outer edge."""
    spike = 2 * math.pi / 5
    alpha = np.mod(np.arctan2(v, u), spike)
    alpha = np.minimum(alpha, spike - alpha)  # 0 at an outer vertex, π/5 at an inner one
    r = np.hypot(u, v)
    px, py = r * np.cos(alpha), r * np.sin(alpha)
    ox = STAR_R  # outer vertex (ox, 0); inner vertex (ix, iy)
    ix, iy = STAR_INNER * STAR_R * math.cos(spike / 2), STAR_INNER * STAR_R * math.sin(spike / 2)
    # Same side of the edge outer→inner as the centre: cross((I-O), (P-O)) >= 0.
    return (ix - ox) * py - iy * (px - ox) >= 0


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shift = CRESCENT_SHIFT * CRESCENT_R
    return (u * u + v * v <= CRESCENT_R**2) & ((u - shift) ** 2 + v * v > CRESCENT_R**2)


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) / DIAMOND_A + np.abs(v) / (DIAMOND_RATIO * DIAMOND_A) <= 1


def _frame(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    m = np.maximum(np.abs(u), np.abs(v))
    return (m <= FRAME_A) & (m >= FRAME_INNER * FRAME_A)


# ---------------------------------------------------------------- textures: (u, v) → weight of colour b in [0, 1]
# Periodic textures get (u, v) already shifted by a random phase; the others use the object's own frame.


def _parity(*cells: np.ndarray) -> np.ndarray:
    return (sum(np.floor(c) for c in cells) % 2).astype(np.float32)


def _solid(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.zeros(u.shape, np.float32)


def _sectors(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pinwheel of 8 alternating wedges."""
    return _parity(np.arctan2(v, u) * (4 / math.pi))


def _checker(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _parity(u / 0.47, v / 0.47)


def _stripes(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bands parallel to the u axis (for the triangle: parallel to its flat side)."""
    return _parity(v / 0.35)


def _diagonal_stripes(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _parity((u + v) / (0.35 * math.sqrt(2)))


def _concentric(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _parity(np.hypot(u, v) / 0.3)


def _dots(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    period, radius = 0.5, 0.18
    du, dv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
    return (du * du + dv * dv <= radius**2).astype(np.float32)


def _grid(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    period, width = 0.5, 0.175
    return ((np.mod(u, period) < width) | (np.mod(v, period) < width)).astype(np.float32)


def _linear_gradient(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.clip((u / PLUS_L + 1) / 2, 0, 1).astype(np.float32)


def _radial_gradient(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """0 at the ring's inner edge, 1 at its outer edge."""
    inner = RING_INNER * RING_R
    return np.clip((np.hypot(u, v) - inner) / (RING_R - inner), 0, 1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ObjectClass:
    """One benchmark class: a shape (area AREA·s²) with its own texture.

    extent: radius (units of s) of the disc around the object's centre that contains the shape.
    periodic: whether the texture is shifted by a random phase.
    """

    name: str
    shape: Shape
    texture: Texture
    extent: float
    periodic: bool
    description: str


# Circumradii (units of s) of the shapes whose size constant is not already their outer radius.
SQUARE_EXTENT = _polygon_inradius(4) * math.sqrt(2)
TRIANGLE_EXTENT = 2 * _polygon_inradius(3)
HEXAGON_EXTENT = _polygon_inradius(6) / math.cos(math.pi / 6)
PLUS_EXTENT = PLUS_L * math.hypot(1, PLUS_WIDTH)
FRAME_EXTENT = FRAME_A * math.sqrt(2)

CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("disc", _disc, _sectors, DISC_R, False, "disc, pinwheel of 8 alternating wedges"),
    ObjectClass("ring", _ring, _radial_gradient, RING_R, False, "annulus, radial gradient inner→outer edge"),
    ObjectClass("square", _regular_polygon(4), _checker, SQUARE_EXTENT, True, "square, checkerboard"),
    ObjectClass("triangle", _regular_polygon(3), _stripes, TRIANGLE_EXTENT, True, "triangle, stripes along a side"),
    ObjectClass("plus", _plus, _linear_gradient, PLUS_EXTENT, False, "plus, gradient along one arm"),
    ObjectClass("star", _star, _concentric, STAR_R, True, "five-pointed star, concentric rings"),
    ObjectClass("crescent", _crescent, _solid, CRESCENT_R, False, "crescent, solid fill"),
    ObjectClass("hexagon", _regular_polygon(6), _dots, HEXAGON_EXTENT, True, "hexagon, dot grid"),
    ObjectClass("diamond", _diamond, _grid, DIAMOND_A, True, "rhombus, grid lines"),
    ObjectClass("frame", _frame, _diagonal_stripes, FRAME_EXTENT, True, "square outline, diagonal stripes"),
)
"""All classes; a benchmark with num_classes=K uses the first K."""

MIN_CLASSES = 8

SPLITS = types.MappingProxyType({"train": 1_000_003, "val": 2_000_003, "test": 3_000_003, "pairs": 4_000_003})
"""Seeds of the named splits: train / val / test are single-object, 'pairs' two-object."""

_SINGLE, _PAIR = 1, 2  # mode tags mixed into each example's seed


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """Generator settings.

    Attributes:
      image_size: images are (image_size, image_size, 3).
      num_classes: K, the first K entries of `CLASSES` (8 ≤ K ≤ len(CLASSES)).
      min_scale, max_scale: range of the object scale s as a fraction of image_size; an object covers
        AREA·s² pixels (s = 0.22·64 ≈ 14 px → 400 px).
      min_distractors, max_distractors: number of plain distractors behind the objects.
      max_noise: largest standard deviation of the background's Gaussian pixel noise (0..255 scale).
      dark_luma, light_luma: luminance ranges (0..255, BT.601 luma) of an object's two colours: one
        dark and one light colour of random hue, in random order, so every texture shows with the
        same contrast whatever the colours, and neither hue nor polarity depends on the class.
      background_luma: luminance range of the background's two colours (between the object ranges).
      max_overlap: in pair mode, the largest overlap of the two objects as a fraction of either one.
    """

    image_size: int = 64
    num_classes: int = 8
    min_scale: float = 0.22
    max_scale: float = 0.32
    min_distractors: int = 1
    max_distractors: int = 3
    max_noise: float = 8.0
    dark_luma: tuple[float, float] = (35.0, 75.0)
    light_luma: tuple[float, float] = (180.0, 220.0)
    background_luma: tuple[float, float] = (100.0, 155.0)
    max_overlap: float = 0.1

    def __post_init__(self):
        if not MIN_CLASSES <= self.num_classes <= len(CLASSES):
            raise ValueError(f"num_classes must be in [{MIN_CLASSES}, {len(CLASSES)}], got {self.num_classes}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        widest = max(c.extent for c in CLASSES[: self.num_classes])
        if 2 * widest * self.max_scale >= 1:
            raise ValueError(f"max_scale {self.max_scale} is too large: objects would not fit in the image")
        if not 0 <= self.min_distractors <= self.max_distractors:
            raise ValueError("need 0 <= min_distractors <= max_distractors")
        for name in ("dark_luma", "light_luma", "background_luma"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # a JSON record gives lists
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= 255:
                raise ValueError(f"{name} must be a range within 0..255, got {(lo, hi)}")


def class_names(config: BenchmarkConfig) -> tuple[str, ...]:
    """Names of the config's K classes, by label."""
    return tuple(c.name for c in CLASSES[: config.num_classes])


def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) coordinates of pixel centres as broadcastable float32 arrays (1, size) and (size, 1)."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, :], c[:, None]


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One placed object: class `label` at `centre` (x, y pixels), scale (pixels), angle (radians),
    colours a and b (RGB floats), texture phase (u, v offsets)."""

    label: int
    centre: tuple[float, float]
    scale: float
    angle: float
    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    phase: tuple[float, float]

    def _local(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres in the object's frame, in units of its scale: (u, v), each (size, size)."""
        x, y = _pixel_centres(size)
        dx, dy = x - self.centre[0], y - self.centre[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (c * dx + s * dy) / self.scale, (-s * dx + c * dy) / self.scale

    def coverage(self, size: int) -> np.ndarray:
        """Boolean (size, size): the pixels whose centre lies inside the shape."""
        return CLASSES[self.label].shape(*self._local(size))

    def colours(self, size: int) -> np.ndarray:
        """float32 (size, size, 3): the textured colour at every pixel (meaningful inside `coverage`)."""
        cls = CLASSES[self.label]
        u, v = self._local(size)
        if cls.periodic:
            u, v = u + self.phase[0], v + self.phase[1]
        t = cls.texture(u, v)[..., None]
        a, b = np.asarray(self.colour_a, np.float32), np.asarray(self.colour_b, np.float32)
        return a + t * (b - a)


def paint(objects: tuple[ObjectSpec, ...], canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw `objects` in order onto a copy of `canvas`.

    Args:
      objects: the objects, later ones on top.
      canvas: float (H, H, 3) background.
    Returns:
      (image float32 (H, H, 3), masks bool (len(objects), H, H)): mask k is the set of pixels whose
      final colour comes from object k.
    """
    size = canvas.shape[0]
    image = np.array(canvas, np.float32)
    masks = np.zeros((len(objects), size, size), bool)
    for k, obj in enumerate(objects):
        cover = obj.coverage(size)
        image[cover] = obj.colours(size)[cover]
        masks[:k] &= ~cover
        masks[k] = cover
    return image, masks


# ---------------------------------------------------------------- background and distractors


LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma weights


def _colour(rng: np.random.Generator, luma: tuple[float, float]) -> np.ndarray:
    """A random-hue RGB colour (3,) whose luma is uniform in the range `luma`.

    A uniform RGB candidate is shifted along grey to the drawn luma; candidates leaving the RGB cube
    are rejected (16 per round, rarely more than one round).
    """
    y = rng.uniform(*luma)
    while True:
        c = rng.uniform(0, 255, (16, 3))
        c += (y - c @ LUMA)[:, None]
        ok = np.all((c >= 0) & (c <= 255), axis=1)
        if ok.any():
            return c[np.argmax(ok)]


def _background(config: BenchmarkConfig, rng: np.random.Generator) -> np.ndarray:
    """A gradient / stripes / flat field between two random mid-luma colours, plus Gaussian pixel noise.

    Returns float32 (H, H, 3).
    """
    base, alt = _colour(rng, config.background_luma), _colour(rng, config.background_luma)
    x, y = _pixel_centres(config.image_size)
    angle = rng.uniform(0, 2 * math.pi)
    t = x * math.cos(angle) + y * math.sin(angle)
    kind = rng.integers(3)
    if kind == 0:
        weight = (t - t.min()) / np.ptp(t)
    elif kind == 1:
        weight = np.floor(t / rng.uniform(4, 12)) % 2
    else:
        weight = np.zeros_like(t)
    canvas = base + weight[..., None] * (alt - base)
    canvas = canvas + rng.uniform(0, config.max_noise) * rng.standard_normal(canvas.shape, dtype=np.float32)
    return canvas.astype(np.float32)


def _distractor(size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (size, size) coverage of one plain distractor: a thin ellipse, a blob or a line segment.

    All are small and untextured, so none looks like a class.
    """
    x, y = _pixel_centres(size)
    cx, cy = rng.uniform(0, size, 2)
    angle = rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)
    kind = rng.integers(3)
    if kind == 0:
        a = rng.uniform(3, 8)
        b = a * rng.uniform(0.25, 0.5)
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if kind == 1:
        cover = np.zeros((size, size), bool)
        for _ in range(rng.integers(2, 4)):
            ox, oy = rng.uniform(-4, 4, 2)
            cover |= (x - cx - ox) ** 2 + (y - cy - oy) ** 2 <= rng.uniform(2, 4) ** 2
        return cover
    half_length, half_width = rng.uniform(4, 12), rng.uniform(0.5, 1.5)
    return (np.abs(u) <= half_length) & (np.abs(v) <= half_width)


def _clutter(config: BenchmarkConfig, rng: np.random.Generator) -> np.ndarray:
    """Background with distractors of uniform random colour: float32 (H, H, 3)."""
    canvas = _background(config, rng)
    for _ in range(rng.integers(config.min_distractors, config.max_distractors + 1)):
        canvas[_distractor(config.image_size, rng)] = rng.uniform(0, 255, 3)
    return canvas


def _object_colours(config: BenchmarkConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An object's colours (a, b): one dark and one light colour of random hues, in random order."""
    dark, light = _colour(rng, config.dark_luma), _colour(rng, config.light_luma)
    return (dark, light) if rng.uniform() < 0.5 else (light, dark)


def _place(config: BenchmarkConfig, rng: np.random.Generator, label: int, colours) -> ObjectSpec:
    """Random scale, rotation, phase and a centre that keeps the whole object inside the image."""
    size = config.image_size
    scale = rng.uniform(config.min_scale, config.max_scale) * size
    margin = CLASSES[label].extent * scale
    cx, cy = rng.uniform(margin, size - margin, 2)
    return ObjectSpec(
        label=int(label),
        centre=(float(cx), float(cy)),
        scale=float(scale),
        angle=float(rng.uniform(0, 2 * math.pi)),
        colour_a=tuple(float(c) for c in colours[0]),
        colour_b=tuple(float(c) for c in colours[1]),
        phase=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1))),
    )


def _overlap_ok(config: BenchmarkConfig, first: ObjectSpec, second: ObjectSpec) -> bool:
    a, b = first.coverage(config.image_size), second.coverage(config.image_size)
    shared = np.count_nonzero(a & b)
    return shared <= config.max_overlap * min(np.count_nonzero(a), np.count_nonzero(b))


MAX_PLACEMENT_TRIES = 1000


@dataclasses.dataclass(frozen=True)
class Scene:
    """An example before compositing: the cluttered background (float32 (H, H, 3)) and its objects."""

    background: np.ndarray
    objects: tuple[ObjectSpec, ...]

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 (H, H, 3), masks bool (len(objects), H, H))."""
        image, masks = paint(self.objects, self.background)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), masks


def scene(config: BenchmarkConfig, seed: int, index: int, pair: bool) -> Scene:
    """Example `index` of the single-object (pair=False) or two-object (pair=True) stream of `seed`."""
    rng = np.random.default_rng((seed, _PAIR if pair else _SINGLE, index))
    labels = rng.choice(config.num_classes, 2, replace=False) if pair else rng.integers(config.num_classes, size=1)
    canvas = _clutter(config, rng)
    colours = [_object_colours(config, rng) for _ in labels]
    for _ in range(MAX_PLACEMENT_TRIES):
        objects = tuple(_place(config, rng, label, c) for label, c in zip(labels, colours, strict=True))
        if not pair or _overlap_ok(config, *objects):
            return Scene(canvas, objects)
    raise RuntimeError(f"could not place two objects with overlap <= {config.max_overlap}; lower max_scale")


def _make(config: BenchmarkConfig, n: int, seed: int, start: int, pair: bool) -> dict[str, np.ndarray]:
    size, k = config.image_size, 2 if pair else 1
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n, k), np.int32)
    masks = np.empty((n, k, size, size), bool)
    for j in range(n):
        sc = scene(config, seed, start + j, pair)
        images[j], masks[j] = sc.render()
        labels[j] = [o.label for o in sc.objects]
    if not pair:
        labels, masks = labels[:, 0], masks[:, 0]
    return {"images": images, "labels": labels, "masks": masks}


def make_single(config: BenchmarkConfig, n: int, seed: int, start: int = 0) -> dict[str, np.ndarray]:
    """Single-object examples start … start+n-1 of `seed`.

    Returns:
      images uint8 (n, H, H, 3); labels int32 (n,); masks bool (n, H, H) (the object's pixels).
    """
    return _make(config, n, seed, start, pair=False)


def make_pair(config: BenchmarkConfig, n: int, seed: int, start: int = 0) -> dict[str, np.ndarray]:
    """Two-object examples start … start+n-1 of `seed`, two different classes per image.

    Returns:
      images uint8 (n, H, H, 3); labels int32 (n, 2); masks bool (n, 2, H, H), disjoint (the first
      object's mask excludes the pixels the second one covers).
    """
    return _make(config, n, seed, start, pair=True)


def make_split(config: BenchmarkConfig, split: str, n: int, start: int = 0) -> dict[str, np.ndarray]:
    """Examples start … start+n-1 of a named split ('train', 'val', 'test': single; 'pairs': pair)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    make = make_pair if split == "pairs" else make_single
    return make(config, n, SPLITS[split], start)
