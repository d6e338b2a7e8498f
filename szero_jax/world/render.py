"""Rendering a SceneSpec from two parallel cameras: left/right videos and ground truth.

Every layer (the background plane, each object) is fronto-parallel in x, so along a row it
has one disparity d: the right camera sees the layer point at left column x at x - d. Each
view is painted far-to-near, the right view sampling every layer at its own shifted
coordinate (x_right + d), so occlusions and disocclusions are true ones, not a warp. A pixel's
colour is a deterministic function of its layer coordinate, so with whole-pixel disparities
the right view equals the left warped by its disparity on every pixel both cameras see.
"""
import dataclasses

import numpy as np

from szero_jax.world import shapes, textures
from szero_jax.world.spec import SceneSpec, sample_spec

HELDOUT_SEED_START = 1_000_000  # seeds >= this are held out for evaluation; training uses lower
DEFAULT_MAX_DISPARITY_FRACTION = 0.06  # of the width, when max_disparity is None
NEAR_DEPTH = 1.0  # depth of a point at max_disparity: depth = max_disparity * NEAR_DEPTH / d


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
    """A rendered stereo clip. From `batch`, arrays gain a leading axis and caption/metadata
    become tuples."""
    left: np.ndarray             # [T, H, W, 3] float32 in [0, 1]
    right: np.ndarray            # [T, H, W, 3] float32, rendered from the right camera
    depth: np.ndarray            # [T, H, W] float32 > 0, left view
    disparity: np.ndarray        # [T, H, W] float32 pixels > 0, left view: x_right = x - d
    right_depth: np.ndarray      # [T, H, W] float32, right view
    right_disparity: np.ndarray  # [T, H, W] float32, right view: x_left = x + d
    occluded: np.ndarray         # [T, H, W] bool, left pixels the right camera cannot see
    disoccluded: np.ndarray      # [T, H, W] bool, right pixels the left camera cannot see
    left_labels: np.ndarray      # [T, H, W] int8, 0 = background, k = metadata object k
    right_labels: np.ndarray     # [T, H, W] int8
    caption: str
    metadata: dict


def make_scene(seed, height, width, frames, *, max_disparity=None, integer_disparity=False,
               num_objects=None):
    """The stereo clip of `seed`: deterministic per (seed, num_objects) at any size/length.

    Seeds in [0, HELDOUT_SEED_START) are for training, >= HELDOUT_SEED_START for evaluation.
    """
    return render(sample_spec(seed, num_objects=num_objects), height, width, frames,
                  max_disparity=max_disparity, integer_disparity=integer_disparity)


def batch(seeds, height, width, frames, **kwargs):
    """`make_scene` over `seeds`, stacked: arrays [B, T, ...], caption/metadata tuples."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    scenes = [make_scene(s, height, width, frames, **kwargs) for s in seeds]
    fields = {f.name: np.stack([getattr(s, f.name) for s in scenes])
              for f in dataclasses.fields(Scene) if f.name not in ("caption", "metadata")}
    return Scene(caption=tuple(s.caption for s in scenes),
                 metadata=tuple(s.metadata for s in scenes), **fields)


def render(spec, height, width, frames, *, max_disparity=None, integer_disparity=False):
    """Render `spec` at [frames, height, width]; `max_disparity` in pixels (default 6% of width).

    integer_disparity=True rounds every layer's disparity to whole pixels (at least 1).
    """
    if not isinstance(spec, SceneSpec):
        raise ValueError(f"spec: expected a SceneSpec, got {type(spec).__name__}")
    for name, value, low in (("height", height, 8), ("width", width, 8), ("frames", frames, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if max_disparity is None:
        max_disparity = DEFAULT_MAX_DISPARITY_FRACTION * width
    if not (isinstance(max_disparity, (int, float, np.number)) and np.isfinite(max_disparity)
            and 0 < max_disparity < width):
        raise ValueError(f"max_disparity: expected pixels in (0, width={width}), got {max_disparity!r}")
    if integer_disparity and max_disparity < 1:
        raise ValueError(f"max_disparity: integer_disparity needs >= 1 pixel, got {max_disparity!r}")

    def quantise(d):
        return (np.maximum(np.floor(d + 0.5), 1.0) if integer_disparity else d).astype(np.float32)

    views = _Views(spec, height, width, frames, float(max_disparity), quantise)
    left, right = views.paint(0), views.paint(1)
    occluded = _unmatched(left, right, -1)
    disoccluded = _unmatched(right, left, +1)
    fb = np.float32(max_disparity * NEAR_DEPTH)  # focal * baseline
    meta = spec.metadata()
    meta.update(height=height, width=width, frames=frames, max_disparity=float(max_disparity),
                integer_disparity=bool(integer_disparity), focal_px=float(width),
                baseline=float(max_disparity * NEAR_DEPTH / width), near_depth=NEAR_DEPTH)
    meta["background"]["disparity_px"] = [float(views.bg_disparity[0]), float(views.bg_disparity[-1])]
    for obj, d in zip(meta["objects"], views.obj_disparity):
        obj["disparity_px"] = d.tolist()
    return Scene(left=left.image, right=right.image, depth=fb / left.disparity,
                 disparity=left.disparity, right_depth=fb / right.disparity,
                 right_disparity=right.disparity, occluded=occluded, disoccluded=disoccluded,
                 left_labels=left.labels, right_labels=right.labels, caption=spec.caption,
                 metadata=meta)


@dataclasses.dataclass
class _View:
    image: np.ndarray
    disparity: np.ndarray
    labels: np.ndarray


class _Views:
    """Layer geometry and textures shared by both views; `paint(view)` draws one camera."""

    def __init__(self, spec, height, width, frames, max_disparity, quantise):
        self.spec, self.h, self.w, self.t = spec, height, width, frames
        self.unit = min(height, width)  # pixels per scene unit
        self.ys = np.arange(height, dtype=np.float32)
        self.xs = np.arange(width, dtype=np.float32)
        bg = spec.background
        rows = bg.disparity_top + (bg.disparity_bottom - bg.disparity_top) * (self.ys + 0.5) / height
        self.bg_disparity = quantise(max_disparity * rows)  # [H]: one disparity per row
        self.bg_shift = np.round(bg.drift * self.unit * np.arange(frames) * 256) / 256
        # background texture realised on the pixel grid it will be read from (no mirroring)
        self.bg_x0 = int(np.floor(min(0.0, self.bg_shift.min()))) - 2
        x1 = int(np.ceil(width + self.bg_disparity.max() + max(0.0, self.bg_shift.max()))) + 2
        gx, gy = np.meshgrid(np.arange(self.bg_x0, x1), np.arange(-1, height + 1))
        self.bg_texture = textures.evaluate(bg.texture, gx / self.unit, gy / self.unit, self.unit)
        self.tracks, self.obj_disparity, self.obj_textures = [], [], []
        for obj in spec.objects:
            x, y, frac, scale, angle = obj.track(frames, height, width)
            self.tracks.append((x.astype(np.float32), y.astype(np.float32), scale, angle))
            self.obj_disparity.append(quantise(max_disparity * frac))
            # object texture on a pixel grid in the object's own frame (frame-0 scale)
            half = int(np.ceil(shapes.EXTENT * obj.radius * self.unit)) + 1
            g = np.arange(-half, half + 1) / self.unit
            gu, gv = np.meshgrid(g, g)
            self.obj_textures.append(textures.evaluate(obj.texture, gu, gv, self.unit))

    def paint(self, view):
        """view 0 = left camera, 1 = right camera (samples each layer at x + d)."""
        t_count, h, w = self.t, self.h, self.w
        # The background row y is read at x + offset[t, y]: integer part shifts the row, the
        # fraction is one lerp weight per row. With whole-pixel disparities the right view's
        # offset is the left's plus d exactly (shifts are multiples of 1/256), so both views
        # read identical texels with identical weights.
        offset = (self.bg_shift[:, None] + view * self.bg_disparity[None, :].astype(np.float64)
                  - self.bg_x0)
        start = np.floor(offset).astype(np.int64)
        frac = (offset - start).astype(np.float32)[..., None, None]
        rows = self.bg_texture[1:h + 1]
        cols = np.arange(w + 1)
        image = np.empty((t_count, h, w, 3), np.float32)
        for t in range(t_count):
            strip = np.take_along_axis(rows, (start[t][:, None] + cols)[..., None], axis=1)
            image[t] = strip[:, :-1] * (1 - frac[t]) + strip[:, 1:] * frac[t]
        disparity = np.broadcast_to(self.bg_disparity[None, :, None], (t_count, h, w)).copy()
        labels = np.zeros((t_count, h, w), np.int8)
        for t in range(t_count):
            depth_order = np.argsort([d[t] for d in self.obj_disparity], kind="stable")
            for k in depth_order:  # far to near
                self._paint_object(k, t, view, image[t], disparity[t], labels[t])
        return _View(np.clip(image, 0.0, 1.0).astype(np.float32), disparity, labels)

    def _paint_object(self, k, t, view, image, disparity, labels):
        obj = self.spec.objects[k]
        x, y, scale, angle = self.tracks[k]
        d = self.obj_disparity[k][t]
        shift = d * np.float32(view)
        radius = np.float32(obj.radius * self.unit * scale[t])  # pixels, this frame
        reach = shapes.EXTENT * float(radius) + 1.0
        x0 = max(0, int(np.floor(x[t] - shift - reach)))
        x1 = min(self.w, int(np.ceil(x[t] - shift + reach)) + 1)
        y0 = max(0, int(np.floor(y[t] - reach)))
        y1 = min(self.h, int(np.ceil(y[t] + reach)) + 1)
        if x0 >= x1 or y0 >= y1:
            return
        # identical float ops in both views for the same layer coordinate (x + shift)
        dx = (self.xs[x0:x1] + shift)[None, :] - x[t]
        dy = (self.ys[y0:y1] - y[t])[:, None]
        c, s = np.float32(np.cos(angle[t])), np.float32(np.sin(angle[t]))
        u = (dx * c + dy * s) / radius
        v = (dy * c - dx * s) / radius
        mask = shapes.inside(obj.shape, obj.shape_params, u, v)
        if not mask.any():
            return
        tex = self.obj_textures[k]
        centre = np.float32((tex.shape[0] - 1) / 2)
        texel = np.float32(obj.radius * self.unit)  # texture pixels per unit of u at frame 0
        # masked points lie within EXTENT, inside the realised texture: no mirroring needed
        rgb = textures.sample_bilinear(tex, v[mask] * texel + centre, u[mask] * texel + centre,
                                       mirror=False)
        image[y0:y1, x0:x1][mask] = rgb
        disparity[y0:y1, x0:x1][mask] = d
        labels[y0:y1, x0:x1][mask] = k + 1


def _unmatched(src, dst, sign):
    """Pixels of view `src` whose point is not what view `dst` shows at x + sign * d
    (nearest pixel, floor(. + 0.5) as in geometry.forward_warp), or falls outside it."""
    w = src.labels.shape[-1]
    xs = np.arange(w, dtype=np.float32)
    target = np.floor(xs + sign * src.disparity + np.float32(0.5)).astype(np.int64)
    inside = (target >= 0) & (target < w)
    seen = np.take_along_axis(dst.labels, np.clip(target, 0, w - 1), axis=-1)
    return ~inside | (seen != src.labels)
