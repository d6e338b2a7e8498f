"""The demo's settings chosen by measurement (issue 15): `image_to_stereo_video`, the function
`make demo` runs, on frame 0 of held-out world seeds with their captions, under a few named
settings; each run scored as the demo scores itself (``experiments.generate.stereo_metrics``:
left-right consistency against the zero-disparity control, and the composite's).

    python -m experiments.sweep_demo --output_json experiments/results/sweep_demo.json --resume \
        --grid_png docs/demo_ghost.png

Seeds: the demo's sample (1,000,004) first, then --num_seeds - 1 more held-out seeds. One JSON
row per (setting, seed), written after each run, so --resume skips what is done.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from absl import app, flags

from experiments import common_flags as cf

GRID_FRAMES = (0, 4, 7)   # the frames issue 15 looked at
TRUE_DISPARITY = {"source": "given", "kind": "disparity_px", "blur_sigma": 0.0}
BACKGROUND = {"first_round_fill": "background", "right_condition": "warped_background"}
# name -> overrides of (StereoCrafterZeroConfig, DepthConfig, SamplingConfig); "paper" = every
# default (the tiny family's max_disparity 0.16 and guidance 1.0, szero_jax.tiny.VIDEO).
# "background_stop0" won (MODEL_CARD.md, "The demo"): it is tiny.DEMO_STEREO.
SETTINGS = {
    "paper": ({}, {}, {}),
    "background": (BACKGROUND, {}, {}),
    "background_d24": (BACKGROUND, {"max_disparity": 0.24}, {}),
    "background_stop0": ({**BACKGROUND, "warp_stop_t": 0}, {}, {}),
    "background_stop0_d24": ({**BACKGROUND, "warp_stop_t": 0}, {"max_disparity": 0.24}, {}),
    "background_g2": (BACKGROUND, {}, {"guidance": 2.0}),
    # The scene's true disparity as the given map (unblurred pixels): the ghost reference.
    "background_true_disparity": (BACKGROUND, TRUE_DISPARITY, {}),
}

cf.declare(__name__, "output_json", "resume", "steps", "seed", "num_seeds")
flags.DEFINE_list("settings", list(SETTINGS), f"Named settings, of {list(SETTINGS)}")
flags.DEFINE_string("grid_png", None, "Also write the demo seed's frames GRID_FRAMES here: the "
                    "true left and right, the generated left, each setting's right view")
FLAGS = flags.FLAGS


def reference_metrics(models, res, scene) -> dict:
    """Frame 0 against the scene (the input image is its left frame 0; later generated frames
    drift from the rendered clip): the right view's PSNR to the true right view, whole and in
    the true holes, and ``hole_ghost`` there; the left view's PSNR to the input. And the
    ratio a perfect latent right view would score with this run's own left view and
    disparity (``latent_warp_ceiling``: the left re-encoded, its latent warped, decoded)."""
    from experiments.latent_warp_ceiling import ratios  # pylint: disable=import-outside-toplevel
    from szero_jax import metrics  # pylint: disable=import-outside-toplevel
    right, holes = np.clip(res.right[0], 0.0, 1.0), scene.disoccluded[0]
    ceiling = ratios(models, res.left[None], res.disparity[None])["latent_warp"]["ratio"]
    return {"latent_warp_ceiling_ratio": ceiling,
            "right_psnr_frame0": float(metrics.psnr(right, scene.right[0])),
            "right_hole_psnr_frame0": float(metrics.psnr(right, scene.right[0], mask=holes)),
            "hole_ghost_frame0": metrics.hole_ghost(right, scene.right[0], scene.left[0], holes),
            "left_psnr_frame0": float(metrics.psnr(np.clip(res.left[0], 0.0, 1.0),
                                                   scene.left[0]))}


def summarize(rows: list) -> dict:
    """{setting: {metric: [per seed], mean, min}} of the consistency ratios."""
    out = {}
    for r in rows:
        d = out.setdefault(r["setting"], {"seeds": [], "ratio": [], "composite_ratio": [],
                                          "hole_fraction": []})
        m = r["metrics"]
        d["seeds"].append(r["seed"])
        d["ratio"].append(m["consistency_ratio_control_over_result"])
        d["composite_ratio"].append(m["composite"]["consistency_ratio_control_over_result"])
        d["hole_fraction"].append(m["hole_fraction"])
        for k in ("hole_ghost_frame0", "right_psnr_frame0", "latent_warp_ceiling_ratio"):
            d.setdefault(k, []).append(r["reference"].get(k, float("nan")))  # ceiling: newer rows
    for d in out.values():
        d["ratio_mean"], d["ratio_min"] = float(np.mean(d["ratio"])), float(np.min(d["ratio"]))
        d["composite_ratio_mean"] = float(np.mean(d["composite_ratio"]))
        d["hole_ghost_frame0_mean"] = float(np.nanmean(d["hole_ghost_frame0"]))
        d["right_psnr_frame0_mean"] = float(np.mean(d["right_psnr_frame0"]))
    return out


def run(models, name: str, seed: int):
    """The demo's pipeline on frame 0 of ``seed`` under setting ``name``: (result, scene)."""
    from szero_jax import pipelines, world  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig  # pylint: disable=import-outside-toplevel
    from szero_jax.stereo import StereoCrafterZeroConfig  # pylint: disable=import-outside-toplevel
    stereo_over, depth_over, sampling_over = SETTINGS[name]
    stereo = dataclasses.replace(StereoCrafterZeroConfig(), **stereo_over)
    depth = dataclasses.replace(DepthConfig(), **depth_over)
    sampling = SamplingConfig(steps=FLAGS.steps, seed=FLAGS.seed, **sampling_over)
    h, w = (s * models.vae_factor for s in models.config.latent_size)
    scene = world.make_scene(seed, h, w, models.num_frames)
    image = np.round(scene.left[0] * 255.0) / 255.0    # as its PNG holds it
    given = scene.disparity if depth.source == "given" else None
    res = pipelines.image_to_stereo_video(models, image.astype(np.float32), scene.caption,
                                          sampling=sampling, depth=depth, stereo=stereo,
                                          depth_map=given)
    return res, scene


def write_grid(path, views: dict, scene) -> None:
    """Frames GRID_FRAMES side by side, one row each: the true left and right views of the
    scene, the generated left (the same for every setting), then each setting's right view."""
    from szero_jax import io  # pylint: disable=import-outside-toplevel
    strip = lambda video: np.concatenate([np.clip(video[f], 0, 1) for f in GRID_FRAMES], axis=1)
    first = next(iter(views.values()))
    rows = [strip(scene.left), strip(scene.right), strip(first.left)]
    rows += [strip(res.right) for res in views.values()]
    io.write_image(path, np.concatenate(rows, axis=0))


def main(argv):
    del argv
    unknown = [s for s in FLAGS.settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"--settings: unknown {unknown}; known: {list(SETTINGS)}")
    from experiments.generate import stereo_metrics  # pylint: disable=import-outside-toplevel
    from szero_jax import pipelines  # pylint: disable=import-outside-toplevel
    from szero_jax.io.atomic import atomic_output  # pylint: disable=import-outside-toplevel
    out = Path(FLAGS.output_json)
    rows = json.loads(out.read_text())["rows"] if FLAGS.resume and out.exists() else []
    done = {(r["setting"], r["seed"]) for r in rows}
    models = pipelines.load_video_models()
    demo_views, scene = {}, None
    for name in FLAGS.settings:
        for seed in cf.held_out_seeds(FLAGS.num_seeds):
            if (name, seed) in done:
                continue
            t0 = time.perf_counter()
            res, scene_s = run(models, name, seed)
            if seed == cf.DEMO_SEED:
                demo_views[name], scene = res, scene_s
            m = stereo_metrics(res)
            rows.append({"setting": name, "seed": seed, "seconds": time.perf_counter() - t0,
                         **dict(zip(("stereo", "depth", "sampling"), SETTINGS[name])),
                         "metrics": m, "reference": reference_metrics(models, res, scene_s)})
            print(f"{name:18s} {seed}: ratio {m['consistency_ratio_control_over_result']:.3f} "
                  f"(composite {m['composite']['consistency_ratio_control_over_result']:.2f}), "
                  f"holes {m['hole_fraction']:.3f}, ghost "
                  f"{rows[-1]['reference']['hole_ghost_frame0']:.3f}, {rows[-1]['seconds']:.0f} s",
                  flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(out) as tmp:
                tmp.write_text(json.dumps({"steps": FLAGS.steps, "seed": FLAGS.seed,
                                           "rows": rows, "summary": summarize(rows)}, indent=1))
    if FLAGS.grid_png:
        for name in FLAGS.settings:         # settings resumed from the JSON: run the demo again
            if name not in demo_views:
                demo_views[name], scene = run(models, name, cf.DEMO_SEED)
        write_grid(Path(FLAGS.grid_png), {n: demo_views[n] for n in FLAGS.settings}, scene)
    for name, d in summarize(rows).items():
        print(f"{name:18s} ratio mean {d['ratio_mean']:.3f} min {d['ratio_min']:.3f} "
              f"per seed {[round(x, 2) for x in d['ratio']]}; composite mean "
              f"{d['composite_ratio_mean']:.2f}; ghost {d['hole_ghost_frame0_mean']:.3f}, "
              f"right PSNR {d['right_psnr_frame0_mean']:.2f} dB")


if __name__ == "__main__":
    cf.set_defaults(output_json="experiments/results/sweep_demo.json", steps=50)
    app.run(main)
