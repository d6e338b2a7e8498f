"""The tiny SD's sample grids (MODEL_CARD.md "Tiny Stable Diffusion").

    python -m experiments.sample_tiny_sd                 # docs/tiny_sd_samples.png
    python -m experiments.sample_tiny_sd --mode depth    # docs/tiny_sd_depth_samples.png

One row per held-out world clip (seeds from HELDOUT_SEED_START, frame 0, 80x128): the real
frame, then (text) text_to_stereo_image's left and right views from its caption and its true
disparity, or (depth) the true disparity map, then depth_to_stereo_image's left and right
views from that map and the caption on the SD 2 depth UNet (the tiny SD's defaults:
tiny.SD_GUIDANCE, tiny.SD_MAX_DISPARITY, 50 DDIM steps). Prints each row's left-right
consistency against the zero-disparity control.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from absl import app, flags

from experiments import common_flags as cf

cf.declare(__name__, "checkpoint")
flags.DEFINE_integer("rows", 4, "Held-out clips in the grid")
flags.DEFINE_enum("mode", "text", ["text", "depth"], "text_to_stereo_image or "
                  "depth_to_stereo_image (the family's sd_depth_unet)")
flags.DEFINE_string("grid", None, "Output image (default docs/tiny_sd_samples.png, depth mode "
                    "docs/tiny_sd_depth_samples.png)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from szero_jax import io, metrics, tiny, world  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines import (depth_to_stereo_image, load_sd_models,  # pylint: disable=import-outside-toplevel
                                     text_to_stereo_image)
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig  # pylint: disable=import-outside-toplevel
    if FLAGS.rows < 1:
        raise app.UsageError(f"--rows: expected >= 1, got {FLAGS.rows}")
    grid_path = FLAGS.grid or ("docs/tiny_sd_depth_samples.png" if FLAGS.mode == "depth"
                               else "docs/tiny_sd_samples.png")
    models = load_sd_models(cf.checkpoint_path(FLAGS.checkpoint),  # default: the tiny SD
                            depth=FLAGS.mode == "depth")
    sampling = SamplingConfig.stereo_image(guidance=tiny.SD_GUIDANCE)
    depth = DepthConfig.stereo_image(max_disparity=tiny.SD_MAX_DISPARITY)
    rows = []
    for k in range(FLAGS.rows):
        s = world.make_scene(world.HELDOUT_SEED_START + k, tiny.HEIGHT, tiny.WIDTH, 1)
        common = dict(sampling=dataclasses.replace(sampling, seed=k), depth=depth)
        if FLAGS.mode == "depth":
            res = depth_to_stereo_image(models, s.disparity[0], s.caption, **common)
        else:
            res = text_to_stereo_image(models, s.caption, size=(tiny.HEIGHT, tiny.WIDTH),
                                       depth_map=s.disparity[0], **common)
        lrc = float(metrics.left_right_consistency(res.left[None], res.right[None],
                                                   res.disparity[None])[0])
        ctrl = float(metrics.left_right_consistency(res.left[None], res.left[None],
                                                    res.disparity[None])[0])
        print(f"seed {world.HELDOUT_SEED_START + k}: consistency {lrc:.4f}, control {ctrl:.4f} "
              f"({ctrl / max(lrc, 1e-12):.2f}x); {s.caption}", flush=True)
        gap = np.ones((tiny.HEIGHT, 4, 3), np.float32)
        d = s.disparity[0]
        shown = [s.left[0]] + ([np.repeat(((d - d.min()) / max(np.ptp(d), 1e-6))[..., None], 3, -1)]
                               if FLAGS.mode == "depth" else []) + [res.left, res.right]
        rows.append(np.concatenate(sum(([v, gap] for v in shown), [])[:-1], axis=1))
    gap = np.ones((4, rows[0].shape[1], 3), np.float32)
    grid = np.concatenate(sum(([r, gap] for r in rows), [])[:-1], axis=0)
    io.write_image(grid_path, grid)
    print(f"wrote {grid_path}")


if __name__ == "__main__":
    app.run(main)
