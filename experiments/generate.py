"""Image + prompt -> stereo video with StereoCrafter-Zero (`make demo` runs it with defaults).

    python -m experiments.generate                       # bundled sample, tiny family, out/demo
    python -m experiments.generate --image photo.png --prompt "..." --checkpoint ckpt/dc512

Writes to --output_dir: left.mp4, right.mp4, sbs_LRF_Full_SBS.mp4, anaglyph_redcyan.mp4
(plus the --format layouts, named with the markers VR players recognise and carrying the
stereo tags: mp4 st3d, or Matroska StereoMode with --container mkv; szero_jax.io.delivery),
depth.mp4, report.html (frames, disparity, holes, timings, metrics, settings; open it in a
browser) and summary.json: the files with their roles, per-stage timings, settings,
consistency metrics (left-right consistency of the right view under the intended disparity,
the same for the zero-disparity control, whose right view equals the left exactly; hole
fraction; flicker). --codec / --crf / --pix_fmt / --container / --frame_packing_sei set the
encoding.
--random_weights_for_testing runs on random tiny weights (for tests before the tiny family
exists; the output is noise).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from absl import app, flags

from experiments import common_flags as cf

SAMPLES = Path(__file__).resolve().parents[1] / "szero_jax" / "assets" / "samples"

cf.declare(__name__, "checkpoint", "output_dir", "seed", "format", "dtype", "compilation_cache_dir",
           "random_weights_for_testing", "image", "prompt", *cf.SAMPLING_FLAGS,
           *cf.DEPTH_FLAGS, *cf.STEREO_FLAGS, *cf.ENCODE_FLAGS)
DEMO_IMAGE = str(SAMPLES / "demo.png")   # --image None: the bundled sample, with its caption
flags.DEFINE_float("fps", 8.0, "Output frame rate (StereoCrafter-Zero save_fps)")
FLAGS = flags.FLAGS


def _progress():
    tty = sys.stdout.isatty()

    def callback(stage, done, total):
        if done == 0:
            print(f"[{stage}] start ({total} network evaluations)" if total > 1 else
                  f"[{stage}] start", flush=True)
        elif tty:
            print(f"\r[{stage}] {done}/{total}", end="\n" if done >= total else "", flush=True)
        else:
            print(f"[{stage}] {done}/{total}", flush=True)

    return callback


def _models():
    from szero_jax import pipelines, tiny  # pylint: disable=import-outside-toplevel
    if FLAGS.random_weights_for_testing:
        import jax  # pylint: disable=import-outside-toplevel
        return pipelines.random_video_models(jax.random.PRNGKey(FLAGS.seed), tiny.VIDEO, tiny.VAE,
                                             tiny.TEXT, tiny.VISION, tiny.DEPTH_UNET, FLAGS.dtype)
    return pipelines.load_video_models(cf.checkpoint_path(FLAGS.checkpoint), FLAGS.dtype)


def _image_path() -> str:
    return FLAGS.image or DEMO_IMAGE


def _input_image(models):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from PIL import Image  # pylint: disable=import-outside-toplevel
    from szero_jax.io import read_image  # pylint: disable=import-outside-toplevel
    img = read_image(_image_path())
    h, w = (s * models.vae_factor for s in models.config.latent_size)
    if img.shape[:2] != (h, w):       # center crop to the model's aspect, then resize
        ih, iw = img.shape[:2]
        scale = max(h / ih, w / iw)
        ch, cw = round(h / scale), round(w / scale)
        top, left = (ih - ch) // 2, (iw - cw) // 2
        crop = Image.fromarray(np.round(img[top:top + ch, left:left + cw] * 255).astype(np.uint8))
        img = np.asarray(crop.resize((w, h), Image.BICUBIC), np.float32) / 255.0
        print(f"resized {_image_path()} from {ih}x{iw} to the model's {h}x{w}")
    return img


def _prompt():
    if FLAGS.prompt is not None:
        return FLAGS.prompt
    if Path(_image_path()).resolve() == Path(DEMO_IMAGE).resolve():
        return (SAMPLES / "demo_prompt.txt").read_text().strip()
    raise ValueError("--prompt: required when --image is not the bundled sample")


def stereo_metrics(res):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import metrics  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.composite import composite_right  # pylint: disable=import-outside-toplevel
    left, right, d = res.left[None], res.right[None], res.disparity[None]
    lrc = float(metrics.left_right_consistency(left, right, d)[0])
    # Zero-disparity control: the pipeline's right view is then exactly the left view
    # (tested invariant), so its consistency under the intended disparity is left vs left.
    ctrl = float(metrics.left_right_consistency(left, left, d)[0])
    # The composite (``pipelines.composite``: the left warped at pixel level, this right view
    # in the holes), what convert_video writes by default, scored the same way beside it.
    comp = composite_right(res.left, res.disparity, res.right).right[None]
    comp_lrc = float(metrics.left_right_consistency(left, comp, d)[0])
    holes = res.holes
    fill_std = float(res.right[holes].std(axis=0).mean()) if holes.any() else None
    return {"left_right_consistency": lrc,
            "left_right_consistency_zero_disparity_control": ctrl,
            "consistency_ratio_control_over_result": ctrl / max(lrc, 1e-12),
            "composite": {"left_right_consistency": comp_lrc,
                          "consistency_ratio_control_over_result": ctrl / max(comp_lrc, 1e-12)},
            "hole_fraction": float(holes.mean()),
            "hole_fill_std": fill_std,
            "right_view_std": float(res.right.std(axis=(0, 1, 2)).mean()),
            "temporal_flicker_right_vs_left": float(metrics.temporal_flicker(left, right)[0]),
            "vertical_disparity_rows": float(metrics.vertical_disparity(left, right)[0]),
            "disparity_px": {"min": float(d.min()), "max": float(d.max()),
                             "mean": float(np.mean(d))}}


def _write_outputs(folder, res, formats, encode):
    """left / right / layouts (VR-player names and stereo tags) and depth; their records."""
    from szero_jax import io  # pylint: disable=import-outside-toplevel
    suffix = cf.container_suffix()
    delivery = io.Delivery(layouts=tuple(dict.fromkeys(("sbs", "anaglyph") + formats)),
                           encode=encode, container=suffix)
    files = io.write_stereo_outputs(folder, res.left, res.right, delivery)
    io.write_video(folder / f"depth{suffix}", res.depth[..., None], config=encode)
    return files + [{"path": f"depth{suffix}", "role": "depth"}]


def main(argv):
    del argv
    start = time.perf_counter()
    cf.enable_compilation_cache(FLAGS.compilation_cache_dir)
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import io, pipelines  # pylint: disable=import-outside-toplevel
    formats = cf.formats(FLAGS.format)
    encode = cf.encode_config(FLAGS.fps)
    cf.check_output_dir(FLAGS.output_dir)
    prompt = _prompt()
    sampling, depth_cfg = cf.sampling_config(), cf.depth_config()
    stereo = cf.stereo_config(tiny_defaults=True)      # the demo's measured settings
    t0 = time.perf_counter()
    models = _models()
    load_s = time.perf_counter() - t0
    image = _input_image(models)
    depth = None if FLAGS.depth is None else np.load(FLAGS.depth, allow_pickle=False)
    print(f"prompt: {prompt!r}")
    res = pipelines.image_to_stereo_video(
        models, image, prompt, sampling=sampling, depth=depth_cfg, stereo=stereo,
        depth_map=depth, callback=_progress())
    with cf.staged_outputs(FLAGS.output_dir) as tmp:
        t0 = time.perf_counter()
        files = _write_outputs(tmp, res, formats, encode)
        write_s = time.perf_counter() - t0
        summary = {
            "prompt": prompt, "image": _image_path(),
            "checkpoint": "random (testing)" if FLAGS.random_weights_for_testing
            else (cf.checkpoint_path(FLAGS.checkpoint) or "tiny family"),
            "frames": int(res.left.shape[0]), "height": int(res.left.shape[1]),
            "width": int(res.left.shape[2]),
            "settings": {"dtype": FLAGS.dtype, "fps": FLAGS.fps, "depth_map": FLAGS.depth,
                         **{k: dataclasses.asdict(v) for k, v in res.settings.items()},
                         "encode": {k: str(v) if k == "fps" else v
                                    for k, v in dataclasses.asdict(encode).items()}},
            "timings_s": {"load_models": load_s, **res.timings, "write_outputs": write_s},
            "metrics": stereo_metrics(res),
            "files": files + [{"path": "summary.json", "role": "summary"},
                              {"path": "report.html", "role": "report"}],
        }
        summary["timings_s"]["total_wall"] = time.perf_counter() - start
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        io.report.write_report(tmp / "report.html", io.report.ReportFrames.sample(
            res.left, res.right, res.disparity, res.holes, count=4), summary,
            title=f"StereoCrafter-Zero: {prompt}")
    cf.report_written(Path(FLAGS.output_dir) / f["path"] for f in summary["files"])
    m = summary["metrics"]
    print(f"left-right consistency {m['left_right_consistency']:.4f} (zero-disparity control "
          f"{m['left_right_consistency_zero_disparity_control']:.4f}), holes "
          f"{m['hole_fraction']:.3f}, flicker {m['temporal_flicker_right_vs_left']:.3f}; "
          f"total {summary['timings_s']['total_wall']:.1f} s")


if __name__ == "__main__":
    cf.set_defaults(output_dir="out/demo", image=DEMO_IMAGE)
    app.run(main)
