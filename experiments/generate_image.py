"""Text / image / depth -> stereo image with StereoDiffusion on a Stable Diffusion checkpoint.

    python -m experiments.generate_image --mode text     # tiny SD, bundled prompt and depth
    python -m experiments.generate_image --mode image    # tiny SD, bundled photo and depth
    python -m experiments.generate_image --mode depth    # tiny SD 2 depth, bundled depth
    python -m experiments.generate_image --mode text --prompt "..." --depth depth.npy \
        --checkpoint ckpt/sd15
    python -m experiments.generate_image --mode image --image photo.png --depth depth.png \
        --checkpoint ckpt/sd14
    python -m experiments.generate_image --mode depth --depth depth.npy --prompt "..." \
        --checkpoint ckpt/sd2_depth

--checkpoint: a converted SD checkpoint (unet/, vae/, text_encoder/, tokenizer/); without it
the shipped tiny SD (the tiny family's sd_unet, in depth mode its sd_depth_unet, on its VAE
and text encoder, 80x128 world frames; MODEL_CARD.md), or random tiny SD weights with
--random_weights_for_testing (noise output; tests only). Without --prompt / --image / --depth the bundled held-out world sample
is used (assets/samples: demo_prompt.txt, demo.png, demo_disparity.npy, its true disparity).
--depth: .npy [H, W] or a greyscale image; --depth_kind says whether larger values are
nearer ("disparity", what DPT/MiDaS return) or farther ("depth"). --right (image mode):
"composite" (default) keeps the photo exactly as the left view and composites the right
view (the photo warped where visible, the method's right view in the holes); "latent" writes
the method's own pair (null-text reconstruction + its right view). Text and depth modes
always write the method's own pair (their left view is itself generated). Writes left.png,
right.png, sbs_LRF_Full_SBS.png, anaglyph_redcyan.png (+ the --format layouts, named with
VR players' markers: szero_jax.io.delivery), disparity.png, summary.json (with the files
and their roles, timings, and the left-right consistency of the right view against the
zero-disparity control, whose right view is the left: experiments/generate.py; and the
block-matched disparity of the pair against the intended one, metrics.block_match_error,
beside the same for the control and for the exact warp of the left view) and report.html.
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
           "depth_kind", "max_disparity", "right")
flags.DEFINE_enum("mode", "text", ["text", "image", "depth"],
                  "StereoDiffusion scenario: text-, image- (null-text inversion) or depth-to-stereo")
flags.DEFINE_enum("attention", "uni", ["none", "uni", "bi"], "Self-attention sharing "
                  "(StereoDiffusionConfig.attention)")
flags.DEFINE_enum("spsmd", "paper", ["paper", "released", "off"], "SPSMD variant")
flags.DEFINE_bool("deblur", False, "Noise in the holes after the shift (Eq. 8)")
flags.DEFINE_integer("null_text_inner_steps", 10, "Adam steps per timestep (released 10)")
FLAGS = flags.FLAGS
SAMPLES = Path(__file__).resolve().parents[1] / "szero_jax" / "assets" / "samples"
DEMO = {"image": SAMPLES / "demo.png", "prompt": SAMPLES / "demo_prompt.txt",
        "depth": SAMPLES / "demo_disparity.npy"}  # held-out world seed (demo.json)


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
    # None: the shipped tiny SD (load_sd_models reads the family in place; depth: its SD 2
    # depth UNet; a converted SD 2 depth checkpoint's unet/ is taken as it is).
    return pipelines.load_sd_models(cf.checkpoint_path(FLAGS.checkpoint), FLAGS.dtype,
                                    depth=FLAGS.mode == "depth")


def _tiny_sd() -> bool:
    """The shipped tiny SD, or another tiny-family folder (sd_unet/, no unet/: e.g. a fresh
    train_tiny output): its settings (tiny.SD_GUIDANCE, tiny.SD_MAX_DISPARITY) apply."""
    path = cf.checkpoint_path(FLAGS.checkpoint)
    return path is None or ((Path(path) / "sd_unet").is_dir()
                            and not (Path(path) / "unet").is_dir())


def _inputs():
    """(prompt, image path, depth path): the flags, else the bundled sample's."""
    prompt = FLAGS.prompt
    if prompt is None:
        prompt = "" if FLAGS.mode == "image" else DEMO["prompt"].read_text().strip()
    return prompt, FLAGS.image or str(DEMO["image"]), FLAGS.depth or str(DEMO["depth"])


def _depth(path):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax.io import read_image  # pylint: disable=import-outside-toplevel
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    return read_image(path).mean(axis=-1)


def _right_mode() -> str:
    """--right's value in image mode; text / depth modes write the method's own pair."""
    if FLAGS.mode == "image":
        return FLAGS.right
    if FLAGS["right"].present and FLAGS.right != "latent":
        raise app.UsageError(f"--right: {FLAGS.mode} mode has no input photo to keep; its right "
                             "view is the method's own (--right composite is for --mode image)")
    return "latent"


def _block_matching(left, right, d) -> dict:
    """Block-matched disparity against the intended ``d`` for the right view, the
    zero-disparity control (right = left: estimate ~0) and the exact forward warp of the left
    (holes grey: the measure's floor on this image's texture), in one batched call."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import metrics  # pylint: disable=import-outside-toplevel
    from szero_jax.geometry import forward_warp  # pylint: disable=import-outside-toplevel
    warped, holes = forward_warp(jnp.asarray(left)[None], jnp.asarray(d)[None])
    warp = np.where(np.asarray(holes[0])[..., None], 0.5, np.asarray(warped[0]))
    names = ("right", "zero_disparity_control", "warp_of_left")
    err = metrics.block_match_error(np.stack([left] * 3), np.stack([right, left, warp]),
                                    np.stack([d] * 3))
    out = {name: {k: float(v[i]) for k, v in err._asdict().items()}
           for i, name in enumerate(names)}
    out["error_ratio_control_over_right"] = (
        out["zero_disparity_control"]["mean_abs_error_px"]
        / max(out["right"]["mean_abs_error_px"], 1e-12))
    out["config"] = dataclasses.asdict(metrics.BlockMatchConfig())
    return out


def _metrics(res, photo=None):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import metrics  # pylint: disable=import-outside-toplevel
    left, right, d = res.left[None], res.right[None], res.disparity[None]
    lrc = float(metrics.left_right_consistency(left, right, d)[0])
    # Zero-disparity control (as experiments/generate.py): the right view equal to the left.
    ctrl = float(metrics.left_right_consistency(left, left, d)[0])
    out = {"left_right_consistency": lrc, "left_right_consistency_zero_disparity_control": ctrl,
           "consistency_ratio_control_over_result": ctrl / max(lrc, 1e-12),
           "hole_fraction": float(res.holes.mean()),
           "disparity_px": {"min": float(d.min()), "max": float(d.max()),
                            "mean": float(d.mean())},
           "block_matching": _block_matching(res.left, res.right, res.disparity)}
    if photo is not None:   # image mode: how far the left view is from the input photo
        exact = bool(np.array_equal(res.left, photo))
        out["left_equals_input"] = exact
        out["left_psnr_vs_input_db"] = (None if exact else
                                        float(metrics.psnr(res.left, photo)))
    return out


def main(argv):
    del argv
    start = time.perf_counter()
    cf.enable_compilation_cache(FLAGS.compilation_cache_dir)
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import io, pipelines  # pylint: disable=import-outside-toplevel
    from szero_jax.stereo import NullTextConfig, StereoDiffusionConfig  # pylint: disable=import-outside-toplevel
    formats = cf.formats(FLAGS.format)
    cf.check_output_dir(FLAGS.output_dir)
    prompt, image_path, depth_path = _inputs()
    right_mode = _right_mode()
    models = _models()
    depth = _depth(depth_path)
    stereo = StereoDiffusionConfig(spsmd=FLAGS.spsmd, deblur=FLAGS.deblur,
                                   attention=FLAGS.attention,
                                   null_text=NullTextConfig(inner_steps=FLAGS.null_text_inner_steps))
    sampling, depth_cfg = SamplingConfig.stereo_image(), DepthConfig.stereo_image()
    if _tiny_sd() and not FLAGS.random_weights_for_testing:
        from szero_jax import tiny  # pylint: disable=import-outside-toplevel
        sampling = dataclasses.replace(sampling, guidance=tiny.SD_GUIDANCE)  # the tiny SD's
        depth_cfg = dataclasses.replace(depth_cfg, max_disparity=tiny.SD_MAX_DISPARITY)
    common = dict(sampling=cf.sampling_config(sampling),   # given flags override
                  depth=cf.depth_config(depth_cfg), stereo=stereo,
                  callback=lambda s, d, t: print(f"[{s}] {d}/{t}" if d else f"[{s}] start",
                                                 flush=True))
    photo = None
    if FLAGS.mode == "image":
        photo = io.read_image(image_path)
        common["stereo"] = dataclasses.replace(stereo, null_text=dataclasses.replace(
            stereo.null_text, prompt=prompt))   # the inversion prompt (released: "")
        res = pipelines.image_to_stereo_image(models, photo, depth, right=right_mode, **common)
    else:
        if not prompt:
            raise app.UsageError(f"--prompt: expected a prompt in {FLAGS.mode} mode, got ''")
        if FLAGS.mode == "text":
            res = pipelines.text_to_stereo_image(models, prompt, size=depth.shape,
                                                 depth_map=depth, **common)
        else:
            res = pipelines.depth_to_stereo_image(models, depth, prompt, **common)
    t_metrics = time.perf_counter()
    scores = _metrics(res, photo)
    t_metrics = time.perf_counter() - t_metrics
    with cf.staged_outputs(FLAGS.output_dir) as tmp:
        files = io.write_stereo_outputs(tmp, res.left, res.right, io.Delivery(
            layouts=tuple(dict.fromkeys(("sbs", "anaglyph") + formats))))
        d = res.disparity
        io.write_image(tmp / "disparity.png", ((d - d.min()) / max(float(np.ptp(d)), 1e-6))[..., None])
        files.append({"path": "disparity.png", "role": "disparity"})
        summary = {"mode": FLAGS.mode, "prompt": prompt,
                   "image": image_path if FLAGS.mode == "image" else None,
                   "depth": depth_path,
                   "checkpoint": cf.checkpoint_path(FLAGS.checkpoint) or (
                       "tiny SD 2 depth" if FLAGS.mode == "depth" else "tiny SD"),
                   "right": right_mode,
                   "random_weights_for_testing": FLAGS.random_weights_for_testing,
                   "settings": {"dtype": FLAGS.dtype, **{
                       k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                       for k, v in res.settings.items()},
                                "stereo": dataclasses.asdict(stereo)},
                   "timings_s": dict(res.timings),
                   "metrics": scores,
                   "files": files + [{"path": "summary.json", "role": "summary"},
                                     {"path": "report.html", "role": "report"}]}
        summary["timings_s"]["metrics"] = t_metrics
        summary["timings_s"]["total_wall"] = time.perf_counter() - start
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        io.report.write_report(tmp / "report.html", io.report.ReportFrames.sample(
            res.left, res.right, res.disparity, res.holes), summary,
            title=f"StereoDiffusion ({FLAGS.mode} mode)")
    cf.report_written(Path(FLAGS.output_dir) / f["path"] for f in summary["files"])
    m = summary["metrics"]
    bm = m["block_matching"]
    print(f"right view: {right_mode}; left-right consistency {m['left_right_consistency']:.4f} "
          f"(zero-disparity control {m['left_right_consistency_zero_disparity_control']:.4f}, "
          f"ratio {m['consistency_ratio_control_over_result']:.2f}x), holes "
          f"{m['hole_fraction']:.3f}; block-matched disparity error "
          f"{bm['right']['mean_abs_error_px']:.2f} px (control "
          f"{bm['zero_disparity_control']['mean_abs_error_px']:.2f}, exact warp "
          f"{bm['warp_of_left']['mean_abs_error_px']:.2f}); total "
          f"{summary['timings_s']['total_wall']:.1f} s")


if __name__ == "__main__":
    cf.set_defaults(output_dir="out/stereo_image", depth_kind="disparity",
                    max_disparity=DepthConfig.stereo_image().max_disparity)
    app.run(main)
