"""What caps the demo's consistency ratio (issue 15): the best a latent-space right view can do.

The demo scores its right view by left-right consistency under the intended disparity against
the zero-disparity control (``experiments.generate.stereo_metrics``). A StereoCrafter-Zero right
view is built in latent space, where one column is ``vae_factor`` pixels (4 for the tiny
family, 8 for DynamiCrafter): the sampler's warp (``geometry.forward_warp`` of latents, the
disparity resized and divided by the factor) moves content by whole latent columns. This
measures, on the rendered held-out clips (no diffusion model involved), the ratio of right
views made without any generation error:

- ``pixel_warp``: the left video forward-warped in pixels (holes stretched): the geometric
  ceiling (what the composite does outside its holes);
- ``grid_pixel_warp``: the same with the disparity rounded to the latent grid (multiples of
  the factor): the latent warp's quantisation alone, without the VAE;
- ``latent_warp``: the decoded latent of the left video warped in latent space (holes
  stretched there), scored against the decoded left (as the demo scores its decoded views):
  the ceiling of a sampler whose right view is exactly the warped left latent;
- ``vae_left``: the decoded left itself as the right view (the VAE's zero-disparity control).

Disparities: the scene's true map (``true``), and its depth normalised as the demo normalises
the depth model's output, over --max_disparity of the width (default the checkpoint's:
``depth_normalised``). --height / --width render the same scenes at another size.

    python -m experiments.latent_warp_ceiling   # experiments/results/latent_warp_ceiling.json
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments import common_flags as cf

cf.declare(__name__, "output_json", "max_disparity", "num_seeds", "height", "width")
FLAGS = flags.FLAGS


def right_views(models, left, d):
    """{name: (left_as_scored, right)} for one clip left [1, T, H, W, 3], disparity [1, T, H, W]."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax import geometry as G  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines import depth as D, stages as S  # pylint: disable=import-outside-toplevel

    def stretched(x, disp):
        warped, holes = G.forward_warp(x, disp)
        return G.background_fill(warped, holes, G.warped_disparity(disp))

    f = models.vae_factor
    z = S.encode(models, left)
    decoded = S.decode(models, z)
    d_lat = D.latent_disparity(np.asarray(d[0]), z.shape[2:4])
    return {"pixel_warp": (left, stretched(left, d)),
            "grid_pixel_warp": (left, stretched(left, jnp.round(d / f) * f)),
            "latent_warp": (decoded, S.decode(models, stretched(z, d_lat))),
            "vae_left": (decoded, decoded)}


def ratios(models, left, d) -> dict:
    """{view: {consistency, control, ratio}} of ``right_views`` under the disparity d."""
    from szero_jax import metrics  # pylint: disable=import-outside-toplevel
    out = {}
    for name, (l, r) in right_views(models, left, d).items():
        lrc = float(metrics.left_right_consistency(l, r, d)[0])
        ctrl = float(metrics.left_right_consistency(l, l, d)[0])
        out[name] = {"consistency": lrc, "control": ctrl, "ratio": ctrl / max(lrc, 1e-12)}
    return out


def main(argv):
    del argv
    from szero_jax import pipelines, world  # pylint: disable=import-outside-toplevel
    from szero_jax.geometry import disparity_from_depth  # pylint: disable=import-outside-toplevel
    from szero_jax.io.atomic import atomic_output  # pylint: disable=import-outside-toplevel
    models = pipelines.load_video_models()
    span = FLAGS.max_disparity or models.config.max_disparity     # the tiny family's 0.16
    h, w = FLAGS.height, FLAGS.width    # default: the tiny family's 80 x 128
    rows = []
    for seed in cf.held_out_seeds(FLAGS.num_seeds):
        scene = world.make_scene(seed, h, w, models.num_frames)
        left = scene.left[None].astype(np.float32)
        maps = {"true": scene.disparity[None],
                "depth_normalised": np.asarray(disparity_from_depth(
                    scene.depth[None], span, "depth"))}
        for map_name, d in maps.items():
            d = np.asarray(d, np.float32)
            row = {"seed": seed, "disparity": map_name, "disparity_px_mean": float(d.mean()),
                   **ratios(models, left, d)}
            rows.append(row)
            print(f"{seed} {map_name:16s} d mean {row['disparity_px_mean']:5.2f} px: " + ", ".join(
                f"{n} {row[n]['ratio']:.2f}" for n in ("pixel_warp", "grid_pixel_warp",
                                                        "latent_warp", "vae_left")), flush=True)
    summary = {m: {n: float(np.mean([r[n]["ratio"] for r in rows if r["disparity"] == m]))
                   for n in ("pixel_warp", "grid_pixel_warp", "latent_warp", "vae_left")}
               for m in ("true", "depth_normalised")}
    print(json.dumps(summary, indent=1))
    with atomic_output(Path(FLAGS.output_json)) as tmp:
        tmp.write_text(json.dumps({"max_disparity": span, "height": h, "width": w, "rows": rows,
                                   "mean_ratio": summary}, indent=1))


if __name__ == "__main__":
    cf.set_defaults(output_json="experiments/results/latent_warp_ceiling.json")
    app.run(main)
