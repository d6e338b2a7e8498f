"""Seeded sampling of a scene's layout: background plane, objects, textures, motions, caption.

A `SceneSpec` is resolution- and length-free: positions are fractions of the frame, sizes and
speeds are in scene units (1 = the frame's shorter side) per frame, disparities are fractions
of the renderer's `max_disparity`. The same seed renders the same scene at any size, and a
longer clip extends a shorter one.
"""
import dataclasses

import numpy as np

from szero_jax.world import shapes, textures, vocab

MOTIONS = ("still", "moving", "bouncing", "circling")
BOUNCE_MARGIN = 0.1  # bouncing objects reflect off the frame inset by this fraction


@dataclasses.dataclass(frozen=True)
class BackgroundSpec:
    texture: textures.TextureSpec
    colour: str            # caption colour, named from the texture's mean over the frame
    disparity_top: float   # fraction of max_disparity at the top row
    disparity_bottom: float  # at the bottom row (> top: a sloping ground-like plane)
    drift: float           # scene units per frame; > 0 moves the content left

    @property
    def sloping(self):
        return self.disparity_bottom > self.disparity_top

    def phrase(self):
        words = (("sloping",) if self.sloping else ()) + (self.colour, self.texture.kind, "background")
        text = vocab.noun_phrase(*words)
        if self.drift:
            text += " drifting " + ("left" if self.drift > 0 else "right")
        return text


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    shape: str
    shape_params: tuple
    texture: textures.TextureSpec
    colour: str          # caption colour, named from the texture's mean over the silhouette
    radius: float        # scene units at frame 0
    position: tuple      # (x, y) at frame 0, fractions of width / height
    disparity: float     # at frame 0, fraction of max_disparity
    motion: str          # one of MOTIONS
    velocity: tuple      # (vx, vy) scene units per frame, image axes (y down)
    orbit: tuple         # (radius scene units, rad per frame, phase) when circling
    spin: float          # rad per frame
    angle: float         # rad at frame 0
    depth_rate: float    # d log(disparity) / frame; > 0 approaches
    min_disparity: float  # disparity never falls below this (stays in front of the background)

    @property
    def size(self):
        return "small" if self.radius < 0.1 else "medium" if self.radius < 0.17 else "large"

    def phrase(self):
        words = []
        if self.motion == "moving":
            vx, vy = self.velocity
            words.append("moving " + (("right" if vx > 0 else "left") if abs(vx) >= abs(vy)
                                      else ("down" if vy > 0 else "up")))
        elif self.motion != "still":
            words.append(self.motion)
        if self.spin:
            words.append("spinning")
        if self.depth_rate:
            words.append("approaching" if self.depth_rate > 0 else "receding")
        motion = " and ".join(words) or "still"
        return vocab.noun_phrase(self.size, self.colour, self.texture.kind, self.shape) + " " + motion

    def track(self, frames, height, width):
        """Per-frame pixel centre x, y, disparity fraction, scale (vs frame 0) and angle."""
        t = np.arange(frames, dtype=np.float64)
        unit = min(height, width)
        x = self.position[0] * width + self.velocity[0] * unit * t
        y = self.position[1] * height + self.velocity[1] * unit * t
        if self.motion == "bouncing":
            x = _reflect(x, BOUNCE_MARGIN * width, (1 - BOUNCE_MARGIN) * width)
            y = _reflect(y, BOUNCE_MARGIN * height, (1 - BOUNCE_MARGIN) * height)
        elif self.motion == "circling":
            r, omega, phase = self.orbit
            x = x + r * unit * (np.cos(omega * t + phase) - np.cos(phase))
            y = y + r * unit * (np.sin(omega * t + phase) - np.sin(phase))
        disparity = np.clip(self.disparity * np.exp(self.depth_rate * t), self.min_disparity, 1.0)
        # apparent size grows with disparity (both ~ 1/depth)
        return x, y, disparity, disparity / self.disparity, self.angle + self.spin * t


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    seed: int
    background: BackgroundSpec
    objects: tuple  # of ObjectSpec, nearest first at frame 0; object k has label k + 1

    @property
    def caption(self):
        scene = self.background.phrase()
        if not self.objects:
            return scene
        return ", ".join(o.phrase() for o in self.objects) + " in front of " + scene

    def metadata(self):
        """Plain-Python description (JSON-serialisable) of the scene."""
        def obj(k, o):
            return {"label": k + 1, "shape": o.shape, "colour": o.colour, "size": o.size,
                    "texture": o.texture.kind, "motion": o.motion, "spin": o.spin,
                    "depth_rate": o.depth_rate, "radius": o.radius,
                    "position": list(o.position), "disparity_fraction": o.disparity}
        objects = [obj(k, o) for k, o in enumerate(self.objects)]
        bg = self.background
        return {"seed": self.seed, "caption": self.caption, "objects": objects,
                "background": {"colour": bg.colour, "texture": bg.texture.kind,
                               "sloping": bg.sloping, "drift": bg.drift,
                               "disparity_fraction": [bg.disparity_top, bg.disparity_bottom]}}


def sample_spec(seed, *, num_objects=None):
    """The scene of `seed` (any int >= 0); `num_objects` (0-8) overrides the drawn count."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    if num_objects is not None and (isinstance(num_objects, bool) or not isinstance(
            num_objects, (int, np.integer)) or not 0 <= num_objects <= 8):
        raise ValueError(f"num_objects: expected None or an int in [0, 8], got {num_objects!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x57E7E0]))
    drawn = int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.25, 0.25, 0.2, 0.15]))
    count = drawn if num_objects is None else int(num_objects)
    background = _sample_background(rng)
    objects = [_sample_object(rng, background) for _ in range(count)]
    objects.sort(key=lambda o: -o.disparity)
    return SceneSpec(seed=int(seed), background=background, objects=tuple(objects))


def _sample_background(rng):
    tex = textures.sample_texture(rng, background=True)
    top = float(rng.uniform(0.03, 0.2))
    bottom = top + float(rng.uniform(0.1, 0.3)) if rng.random() < 0.35 else top
    drift = float(rng.uniform(0.004, 0.015) * rng.choice([-1, 1])) if rng.random() < 0.3 else 0.0
    u, v = np.meshgrid(np.linspace(0, 1, 24), np.linspace(0, 1, 24))
    colour = vocab.colour_name(textures.evaluate(tex, u, v, 24.0).reshape(-1, 3).mean(0))
    return BackgroundSpec(tex, colour, top, bottom, drift)


def _sample_object(rng, background):
    shape = str(rng.choice(vocab.SHAPES))
    params = shapes.sample_params(rng, shape)
    tex = textures.sample_texture(rng, background=False)
    radius = float(rng.uniform(0.06, 0.25))
    position = tuple(float(p) for p in rng.uniform(0.15, 0.85, 2))
    motion = str(rng.choice(MOTIONS, p=[0.2, 0.4, 0.2, 0.2]))
    velocity, orbit = (0.0, 0.0), (0.0, 0.0, 0.0)
    if motion == "moving":
        heading = rng.integers(4) * np.pi / 2 + rng.uniform(-0.4, 0.4)  # near an axis
        speed = rng.uniform(0.008, 0.03)
        velocity = (float(speed * np.cos(heading)), float(speed * np.sin(heading)))
    elif motion == "bouncing":
        heading, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.02, 0.05)
        velocity = (float(speed * np.cos(heading)), float(speed * np.sin(heading)))
    elif motion == "circling":
        orbit = (float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.15, 0.4) * rng.choice([-1, 1])),
                 float(rng.uniform(0, 2 * np.pi)))
    spin = float(rng.uniform(0.05, 0.2) * rng.choice([-1, 1])) if rng.random() < 0.3 else 0.0
    lowest = background.disparity_bottom + 0.08  # objects stay in front of the whole background
    depth_rate = 0.0
    if rng.random() < 0.3:
        depth_rate = float(rng.uniform(0.01, 0.03) * rng.choice([-1, 1]))
    # approaching objects start far, receding ones near, so the change stays visible
    if depth_rate > 0:
        lo, hi = lowest, max(lowest, 0.6)
    elif depth_rate < 0:
        lo, hi = max(lowest, 0.5), 1.0
    else:
        lo, hi = lowest, 1.0
    disparity = float(rng.uniform(lo, hi))
    angle = float(rng.uniform(0, 2 * np.pi))
    # caption colour = name of the mean colour the silhouette shows
    g = np.linspace(-shapes.EXTENT, shapes.EXTENT, 32)
    u, v = np.meshgrid(g, g)
    mask = shapes.inside(shape, params, u, v)
    rgb = textures.evaluate(tex, u[mask] * radius, v[mask] * radius, 32 / (2 * shapes.EXTENT * radius))
    return ObjectSpec(shape=shape, shape_params=params, texture=tex,
                      colour=vocab.colour_name(rgb.mean(0)), radius=radius, position=position,
                      disparity=disparity, motion=motion, velocity=velocity, orbit=orbit,
                      spin=spin, angle=angle, depth_rate=depth_rate, min_disparity=lowest)


def _reflect(x, lo, hi):
    """Fold an unbounded path into [lo, hi] as a ball bouncing between two walls."""
    span = hi - lo
    p = np.mod(x - lo, 2 * span)
    return lo + np.where(p > span, 2 * span - p, p)
