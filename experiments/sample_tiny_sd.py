"""The tiny SD's sample grid (MODEL_CARD.md "Tiny Stable Diffusion"): docs/tiny_sd_samples.png.

    python -m experiments.sample_tiny_sd

One row per held-out world clip (seeds from HELDOUT_SEED_START, frame 0, 80x128): the real
frame, then text_to_stereo_image's left and right views from its caption and its true
disparity (the tiny SD's defaults: tiny.SD_GUIDANCE, tiny.SD_MAX_DISPARITY, 50 DDIM steps).
Prints each row's left-right consistency against the zero-disparity control.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from absl import app, flags

from experiments import common_flags as cf

cf.declare(__name__, "checkpoint")
flags.DEFINE_integer("rows", 4, "Held-out clips in the grid")
flags.DEFINE_string("grid", "docs/tiny_sd_samples.png", "Output image")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from szero_jax import io, metrics, tiny, world  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines import load_sd_models, text_to_stereo_image  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig  # pylint: disable=import-outside-toplevel
    if FLAGS.rows < 1:
        raise app.UsageError(f"--rows: expected >= 1, got {FLAGS.rows}")
    models = load_sd_models(cf.checkpoint_path(FLAGS.checkpoint))  # default: the tiny SD
    sampling = SamplingConfig.stereo_image(guidance=tiny.SD_GUIDANCE)
    depth = DepthConfig.stereo_image(max_disparity=tiny.SD_MAX_DISPARITY)
    rows = []
    for k in range(FLAGS.rows):
        s = world.make_scene(world.HELDOUT_SEED_START + k, tiny.HEIGHT, tiny.WIDTH, 1)
        res = text_to_stereo_image(models, s.caption, size=(tiny.HEIGHT, tiny.WIDTH),
                                   sampling=dataclasses.replace(sampling, seed=k),
                                   depth=depth, depth_map=s.disparity[0])
        lrc = float(metrics.left_right_consistency(res.left[None], res.right[None],
                                                   res.disparity[None])[0])
        ctrl = float(metrics.left_right_consistency(res.left[None], res.left[None],
                                                    res.disparity[None])[0])
        print(f"seed {world.HELDOUT_SEED_START + k}: consistency {lrc:.4f}, control {ctrl:.4f} "
              f"({ctrl / max(lrc, 1e-12):.2f}x); {s.caption}", flush=True)
        gap = np.ones((tiny.HEIGHT, 4, 3), np.float32)
        rows.append(np.concatenate([s.left[0], gap, res.left, gap, res.right], axis=1))
    gap = np.ones((4, rows[0].shape[1], 3), np.float32)
    grid = np.concatenate(sum(([r, gap] for r in rows), [])[:-1], axis=0)
    io.write_image(FLAGS.grid, grid)
    print(f"wrote {FLAGS.grid}")


if __name__ == "__main__":
    app.run(main)
