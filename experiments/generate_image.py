"""Text / image / depth -> stereo image with StereoDiffusion on a Stable Diffusion checkpoint.

    python -m experiments.generate_image --mode text --prompt "..." --depth depth.npy \
        --checkpoint ckpt/sd15
    python -m experiments.generate_image --mode image --image photo.png --depth depth.png \
        --checkpoint ckpt/sd14
    python -m experiments.generate_image --mode depth --depth depth.npy --prompt "..." \
        --checkpoint ckpt/sd2_depth

Needs a converted SD checkpoint (unet/, vae/, text_encoder/, tokenizer/): the project ships
no tiny SD, so without --checkpoint it stops with an error, unless
--random_weights_for_testing is given (random tiny SD weights, noise output; tests only).
--depth: .npy [H, W] or a greyscale image; --depth_kind says whether larger values are
nearer ("disparity", what DPT/MiDaS return) or farther ("depth"). Writes left.png,
right.png, sbs.png, anaglyph.png (+ the --format layouts), disparity.png and summary.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags

from experiments import common_flags as cf

cf.define_checkpoint(None, "Converted Stable Diffusion checkpoint directory (unet/, vae/, "
                           "text_encoder/, tokenizer/); no default: required (no tiny SD is shipped)")
cf.define_output_dir("out/stereo_image")
cf.define_common()
flags.DEFINE_enum("mode", "text", ["text", "image", "depth"],
                  "StereoDiffusion scenario: text-, image- (null-text inversion) or depth-to-stereo")
flags.DEFINE_string("prompt", None, "Prompt (text/depth modes; image mode: optional, default '')")
flags.DEFINE_string("image", None, "Input photo (image mode; no default)")
flags.DEFINE_string("depth", None, "Depth map: .npy [H, W] or a greyscale image (all modes; no default)")
flags.DEFINE_enum("depth_kind", "disparity", ["disparity", "depth"],
                  "Larger values nearer (disparity, DPT/MiDaS) or farther (depth)")
flags.DEFINE_integer("steps", 50, "DDIM steps (StereoDiffusion scripts)")
flags.DEFINE_float("guidance", None, "CFG scale (default: 9.0 text, 7.5 image/depth; "
                   "StereoDiffusion scripts)")
flags.DEFINE_float("max_disparity", 0.08, "Shift as a fraction of the width (StereoDiffusion 8%)")
flags.DEFINE_enum("attention", "uni", ["none", "uni", "bi"], "Self-attention sharing")
flags.DEFINE_enum("spsmd", "paper", ["paper", "released", "off"], "SPSMD variant")
flags.DEFINE_bool("deblur", False, "Noise in the holes after the shift (Eq. 8)")
flags.DEFINE_integer("null_text_inner_steps", 10, "Adam steps per timestep (released 10)")
flags.DEFINE_bool("random_weights_for_testing", False,
                  "Random tiny SD weights instead of a checkpoint (tests only)")
FLAGS = flags.FLAGS


def _models():
    from szero_jax import pipelines  # pylint: disable=import-outside-toplevel
    if FLAGS.random_weights_for_testing:
        import jax  # pylint: disable=import-outside-toplevel
        from szero_jax import tiny  # pylint: disable=import-outside-toplevel
        from szero_jax.models.configs import CLIPTextConfig, UNet2DConfig  # pylint: disable=import-outside-toplevel
        w = tiny.WIDTH_EMBED
        unet = UNet2DConfig(in_channels=5 if FLAGS.mode == "depth" else 4,
                            block_out_channels=(32, 64), layers_per_block=1, heads=(2, 4),
                            cross_attention_dim=w, cross_attn=(True, True))
        text = CLIPTextConfig(vocab_size=tiny.TEXT.vocab_size, width=w, layers=2, heads=4,
                              mlp_dim=4 * w, projection_dim=None)
        return pipelines.random_sd_models(jax.random.PRNGKey(FLAGS.seed), unet, tiny.VAE, text,
                                          FLAGS.dtype)
    path = cf.checkpoint_path(FLAGS.checkpoint)
    if path is None:
        raise app.UsageError("--checkpoint: generate_image needs a converted Stable Diffusion "
                             "checkpoint; the project ships no tiny SD (use "
                             "--random_weights_for_testing only to test the plumbing)")
    return pipelines.load_sd_models(path, FLAGS.dtype)


def _depth():
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax.io import read_image  # pylint: disable=import-outside-toplevel
    if FLAGS.depth is None:
        raise app.UsageError("--depth: required (no depth estimator for single images is "
                             "bundled); .npy [H, W] or a greyscale image")
    if FLAGS.depth.endswith(".npy"):
        return np.load(FLAGS.depth, allow_pickle=False)
    return read_image(FLAGS.depth).mean(axis=-1)


def main(argv):
    del argv
    start = time.perf_counter()
    cf.enable_compilation_cache(FLAGS.compilation_cache_dir)
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import io, pipelines  # pylint: disable=import-outside-toplevel
    from szero_jax.stereo import NullTextConfig, StereoDiffusionConfig  # pylint: disable=import-outside-toplevel
    formats = cf.formats(FLAGS.format)
    cf.check_output_dir(FLAGS.output_dir)
    models = _models()
    depth = _depth()
    stereo = StereoDiffusionConfig(spsmd=FLAGS.spsmd, deblur=FLAGS.deblur,
                                   attention=FLAGS.attention)
    common = dict(depth_kind=FLAGS.depth_kind, steps=FLAGS.steps, seed=FLAGS.seed, stereo=stereo,
                  max_disparity=FLAGS.max_disparity,
                  callback=lambda s, d, t: print(f"[{s}] {d}/{t}" if d else f"[{s}] start",
                                                 flush=True))
    if FLAGS.guidance is not None:
        common["guidance"] = FLAGS.guidance
    if FLAGS.mode == "image":
        if not FLAGS.image:
            raise app.UsageError("--image: required in image mode")
        res = pipelines.image_to_stereo_image(
            models, io.read_image(FLAGS.image), depth, prompt=FLAGS.prompt or "",
            null_text=NullTextConfig(inner_steps=FLAGS.null_text_inner_steps), **common)
    else:
        if not FLAGS.prompt:
            raise app.UsageError(f"--prompt: required in {FLAGS.mode} mode")
        if FLAGS.mode == "text":
            res = pipelines.text_to_stereo_image(models, FLAGS.prompt, height=depth.shape[0],
                                                 width=depth.shape[1], depth=depth, **common)
        else:
            res = pipelines.depth_to_stereo_image(models, depth, FLAGS.prompt, **common)
    names = []
    with cf.staged_outputs(FLAGS.output_dir) as tmp:
        io.write_image(tmp / "left.png", res.left)
        io.write_image(tmp / "right.png", res.right)
        d = res.disparity
        io.write_image(tmp / "disparity.png", ((d - d.min()) / max(float(np.ptp(d)), 1e-6))[..., None])
        names += ["left.png", "right.png", "disparity.png"]
        for layout in dict.fromkeys(("sbs", "anaglyph") + formats):
            io.write_stereo(tmp / f"{layout}.png", res.left, res.right, layout)
            names.append(f"{layout}.png")
        from szero_jax import metrics  # pylint: disable=import-outside-toplevel
        summary = {"mode": FLAGS.mode, "prompt": FLAGS.prompt, "image": FLAGS.image,
                   "depth": FLAGS.depth, "checkpoint": FLAGS.checkpoint,
                   "random_weights_for_testing": FLAGS.random_weights_for_testing,
                   "settings": {k: getattr(FLAGS, k) for k in (
                       "steps", "guidance", "max_disparity", "attention", "spsmd", "deblur",
                       "seed", "dtype", "depth_kind")},
                   "timings_s": dict(res.timings),
                   "metrics": {"left_right_consistency": float(metrics.left_right_consistency(
                       res.left[None], res.right[None], res.disparity[None])[0]),
                       "hole_fraction": float(res.holes.mean())}}
        summary["timings_s"]["total_wall"] = time.perf_counter() - start
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        names.append("summary.json")
    cf.report_written(Path(FLAGS.output_dir) / n for n in names)


if __name__ == "__main__":
    app.run(main)
