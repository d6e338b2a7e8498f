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
right.png, sbs_LRF_Full_SBS.png, anaglyph_redcyan.png (+ the --format layouts, named with
VR players' markers: szero_jax.io.delivery), disparity.png, summary.json (with the files
and their roles) and report.html.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from absl import app, flags

from experiments import common_flags as cf
from szero_jax.pipelines.config import DepthConfig, SamplingConfig

cf.declare(__name__, "checkpoint", "output_dir", "seed", "format", "dtype", "compilation_cache_dir",
           "random_weights_for_testing", "image", "prompt", "steps", "guidance", "depth",
           "depth_kind", "max_disparity")
flags.DEFINE_enum("mode", "text", ["text", "image", "depth"],
                  "StereoDiffusion scenario: text-, image- (null-text inversion) or depth-to-stereo")
flags.DEFINE_enum("attention", "uni", ["none", "uni", "bi"], "Self-attention sharing "
                  "(StereoDiffusionConfig.attention)")
flags.DEFINE_enum("spsmd", "paper", ["paper", "released", "off"], "SPSMD variant")
flags.DEFINE_bool("deblur", False, "Noise in the holes after the shift (Eq. 8)")
flags.DEFINE_integer("null_text_inner_steps", 10, "Adam steps per timestep (released 10)")
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
                                   attention=FLAGS.attention,
                                   null_text=NullTextConfig(inner_steps=FLAGS.null_text_inner_steps))
    common = dict(sampling=cf.sampling_config(SamplingConfig.stereo_image()),
                  depth=cf.depth_config(DepthConfig.stereo_image()), stereo=stereo,
                  callback=lambda s, d, t: print(f"[{s}] {d}/{t}" if d else f"[{s}] start",
                                                 flush=True))
    if FLAGS.mode == "image":
        if not FLAGS.image:
            raise app.UsageError("--image: required in image mode")
        res = pipelines.image_to_stereo_image(
            models, io.read_image(FLAGS.image), depth, prompt=FLAGS.prompt or "", **common)
    else:
        if not FLAGS.prompt:
            raise app.UsageError(f"--prompt: required in {FLAGS.mode} mode")
        if FLAGS.mode == "text":
            res = pipelines.text_to_stereo_image(models, FLAGS.prompt, size=depth.shape,
                                                 depth_map=depth, **common)
        else:
            res = pipelines.depth_to_stereo_image(models, depth, FLAGS.prompt, **common)
    with cf.staged_outputs(FLAGS.output_dir) as tmp:
        files = io.write_stereo_outputs(tmp, res.left, res.right, io.Delivery(
            layouts=tuple(dict.fromkeys(("sbs", "anaglyph") + formats))))
        d = res.disparity
        io.write_image(tmp / "disparity.png", ((d - d.min()) / max(float(np.ptp(d)), 1e-6))[..., None])
        files.append({"path": "disparity.png", "role": "disparity"})
        from szero_jax import metrics  # pylint: disable=import-outside-toplevel
        summary = {"mode": FLAGS.mode, "prompt": FLAGS.prompt, "image": FLAGS.image,
                   "depth": FLAGS.depth, "checkpoint": FLAGS.checkpoint,
                   "random_weights_for_testing": FLAGS.random_weights_for_testing,
                   "settings": {"dtype": FLAGS.dtype, **{k: dataclasses.asdict(v) for k, v in
                                                         res.settings.items()},
                                "stereo": dataclasses.asdict(stereo)},
                   "timings_s": dict(res.timings),
                   "metrics": {"left_right_consistency": float(metrics.left_right_consistency(
                       res.left[None], res.right[None], res.disparity[None])[0]),
                       "hole_fraction": float(res.holes.mean())},
                   "files": files + [{"path": "summary.json", "role": "summary"},
                                     {"path": "report.html", "role": "report"}]}
        summary["timings_s"]["total_wall"] = time.perf_counter() - start
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        io.report.write_report(tmp / "report.html", io.report.ReportFrames.sample(
            res.left, res.right, res.disparity, res.holes), summary,
            title=f"StereoDiffusion ({FLAGS.mode} mode)")
    cf.report_written(Path(FLAGS.output_dir) / f["path"] for f in summary["files"])


if __name__ == "__main__":
    cf.set_defaults(output_dir="out/stereo_image", depth_kind="disparity",
                    max_disparity=DepthConfig.stereo_image().max_disparity)
    app.run(main)
