"""Textures: procedural patterns and scikit-image's bundled photographs, tinted by a named colour.

A texture is a pure function of continuous coordinates (u, v) in *scene units* (1 unit =
the frame's shorter side), so the same spec looks the same at any resolution. Noise is a
hash of integer lattice coordinates: no random arrays, no dependence on the evaluated extent.
"""
import dataclasses
import functools

import numpy as np

from szero_jax.world import vocab


@dataclasses.dataclass(frozen=True)
class TextureSpec:
    kind: str             # a word of vocab.PATTERNS or vocab.PHOTOS
    rgb: tuple            # tint colour (vocab.COLOURS value)
    contrast: float       # signed amplitude of the luminance pattern around the tint
    period: float         # pattern period, scene units
    angle: float          # pattern orientation, radians
    seed: int             # noise hash seed
    mix: float = 0.0      # weight of the photo's own colours (1 = untinted photo)
    zoom: float = 0.5     # photo shorter-side fraction shown per scene unit
    offset: tuple = (0.0, 0.0)   # photo crop origin, fraction of its height / width
    gains: tuple = (1.0, 1.0, 1.0)  # per-channel colour jitter of the photo


def sample_texture(rng, *, background):
    """Draw a random TextureSpec; backgrounds may be untinted photographs."""
    photo = rng.random() < (0.5 if background else 0.4)
    kind = rng.choice(list(vocab.PHOTOS) if photo else list(vocab.PATTERNS))
    colour = rng.choice(list(vocab.COLOURS))
    mix = 0.0
    if photo:
        mix = 1.0 if background and rng.random() < 0.5 else rng.uniform(0.0, 0.4)
    return TextureSpec(
        kind=str(kind), rgb=vocab.COLOURS[colour],
        contrast=float(rng.uniform(0.3, 0.7) * rng.choice([-1.0, 1.0])),
        period=float(rng.uniform(0.06, 0.25)), angle=float(rng.uniform(0.0, np.pi)),
        seed=int(rng.integers(2**31)), mix=float(mix), zoom=float(rng.uniform(0.3, 0.9)),
        offset=tuple(float(o) for o in rng.uniform(0.0, 0.3, 2)),  # crops mostly unmirrored
        gains=tuple(float(g) for g in np.clip(1.0 + rng.normal(0.0, 0.06, 3), 0.8, 1.2)))


def evaluate(tex, u, v, px_per_unit):
    """RGB float32 [..., 3] in [0, 1] of `tex` at scene coordinates u, v (same shape).

    `px_per_unit` is the sampling density, used to pick a photo pyramid level (no aliasing).
    """
    u = np.asarray(u, np.float32)
    v = np.asarray(v, np.float32)
    c, s = np.float32(np.cos(tex.angle)), np.float32(np.sin(tex.angle))
    a, b = u * c + v * s, v * c - u * s
    p = np.float32(tex.period)
    photo_rgb = None
    if tex.kind == "striped":
        lum = 0.5 + 0.5 * np.tanh(3.0 * np.sin(2 * np.pi * a / p))
    elif tex.kind == "checkered":
        lum = 0.5 + 0.5 * np.tanh(6.0 * np.sin(2 * np.pi * a / p) * np.sin(2 * np.pi * b / p))
    elif tex.kind == "dotted":
        fa, fb = a / p - np.floor(a / p) - 0.5, b / p - np.floor(b / p) - 0.5
        lum = 1.0 / (1.0 + np.exp((np.hypot(fa, fb) - 0.3) * 25.0))
    elif tex.kind == "mottled":
        lum = fractal_noise(u, v, p, tex.seed)
    elif tex.kind == "marbled":
        lum = 0.5 + 0.5 * np.sin(2 * np.pi * (a / p + 2.0 * fractal_noise(u, v, 2 * p, tex.seed)))
    elif tex.kind in vocab.PHOTOS:
        photo_rgb = _photo_sample(tex, u, v, px_per_unit)
        lum = photo_rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    else:
        raise ValueError(f"tex.kind: expected a pattern or photo word, got {tex.kind!r}")
    rgb = np.asarray(tex.rgb, np.float32) + np.float32(tex.contrast) * (lum[..., None] - 0.5)
    if photo_rgb is not None and tex.mix > 0:
        rgb = (1 - tex.mix) * rgb + tex.mix * photo_rgb * np.asarray(tex.gains, np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def fractal_noise(u, v, period, seed, octaves=4):
    """Sum of value-noise octaves in [0, 1], base lattice spacing `period` scene units."""
    total, weight = 0.0, 0.0
    for o in range(octaves):
        amp = 0.5 ** o
        total = total + amp * _value_noise(u * (2 ** o) / period, v * (2 ** o) / period, seed + o)
        weight += amp
    return (total / weight).astype(np.float32)


def _value_noise(x, y, seed):
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep: no lattice creases
    ix, iy = x0.astype(np.int64), y0.astype(np.int64)
    h00, h01 = _hash(ix, iy, seed), _hash(ix + 1, iy, seed)
    h10, h11 = _hash(ix, iy + 1, seed), _hash(ix + 1, iy + 1, seed)
    top = h00 + (h01 - h00) * fx
    bottom = h10 + (h11 - h10) * fx
    return top + (bottom - top) * fy


def _hash(ix, iy, seed):
    """Integer lattice point -> uniform float32 in [0, 1) (murmur-style finaliser)."""
    h = (ix.astype(np.uint32) * np.uint32(0x8DA6B343)) ^ (iy.astype(np.uint32) * np.uint32(0xD8163841))
    h ^= np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def sample_bilinear(image, y, x, mirror=True):
    """Bilinear sample of `image` [h, w, C] at float coordinates, mirror-extended beyond
    edges (mirror=False clamps instead: cheaper, for coordinates known to lie inside)."""
    h, w = image.shape[:2]
    y0f, x0f = np.floor(y), np.floor(x)
    fy, fx = (y - y0f)[..., None], (x - x0f)[..., None]
    y0, x0 = y0f.astype(np.int64), x0f.astype(np.int64)
    fold = _mirror if mirror else (lambda i, n: np.clip(i, 0, n - 1))
    ya, yb = fold(y0, h), fold(y0 + 1, h)
    xa, xb = fold(x0, w), fold(x0 + 1, w)
    flat = image.reshape(h * w, -1)
    top = flat[ya * w + xa] * (1 - fx) + flat[ya * w + xb] * fx
    bottom = flat[yb * w + xa] * (1 - fx) + flat[yb * w + xb] * fx
    return top * (1 - fy) + bottom * fy


def _mirror(i, n):
    i = np.mod(i, 2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def _photo_sample(tex, u, v, px_per_unit):
    levels = _photo_pyramid(vocab.PHOTOS[tex.kind])
    h0, w0 = levels[0].shape[:2]
    photo_px_per_unit = tex.zoom * min(h0, w0)
    # coarsest level whose pixels are still no larger than the samples' spacing
    level = int(np.clip(np.floor(np.log2(max(photo_px_per_unit / px_per_unit, 1.0))),
                        0, len(levels) - 1))
    scale = photo_px_per_unit / 2 ** level
    y = tex.offset[0] * h0 / 2 ** level + v * scale
    x = tex.offset[1] * w0 / 2 ** level + u * scale
    return sample_bilinear(levels[level], y, x).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _photo_pyramid(name):
    """RGB float32 2x2-box pyramid of a bundled skimage photograph, down to ~16 px."""
    import skimage.data  # imported lazily: only photo textures need it

    img = np.asarray(getattr(skimage.data, name)(), np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    levels = [img[..., :3]]
    while min(levels[-1].shape[:2]) >= 32:
        a = levels[-1]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        a = a[:h, :w]
        levels.append(0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]))
    return tuple(levels)
