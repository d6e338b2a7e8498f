"""Procedural stereo world: seeded scenes rendered from two parallel cameras with ground truth.

    scene = make_scene(seed, height, width, frames)   # Scene of numpy arrays + caption
    spec = sample_spec(seed); scene = render(spec, height, width, frames)
    scenes = batch(range(8), 64, 64, 16)              # stacked arrays for training

Seeds in [0, HELDOUT_SEED_START) are training data; seeds >= HELDOUT_SEED_START (1_000_000)
are reserved for held-out evaluation.
"""
from szero_jax.world.render import (DEFAULT_MAX_DISPARITY_FRACTION, HELDOUT_SEED_START,
                                    NEAR_DEPTH, Scene, batch, make_scene, render)
from szero_jax.world.spec import BackgroundSpec, ObjectSpec, SceneSpec, sample_spec
from szero_jax.world.textures import TextureSpec
from szero_jax.world.vocab import COLOURS, SHAPES, VOCABULARY, colour_name, tokenize

__all__ = [
    "BackgroundSpec", "COLOURS", "DEFAULT_MAX_DISPARITY_FRACTION", "HELDOUT_SEED_START",
    "NEAR_DEPTH", "ObjectSpec", "SHAPES", "Scene", "SceneSpec", "TextureSpec", "VOCABULARY",
    "batch", "colour_name", "make_scene", "render", "sample_spec", "tokenize",
]
