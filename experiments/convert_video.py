"""Convert 2D footage to stereo: any length, any resolution, the input kept exact.

    python -m experiments.convert_video --input clip.mp4 --output_dir out/clip
    python -m experiments.convert_video --input clips/ --output_dir out/clips --lossless
    python -m experiments.convert_video --input clip.mkv --depth disp.npy \\
        --depth_kind disparity_px --blur_sigma 0 --output_dir out/clip --resume

Frames stream through FFmpeg in windows (memory does not grow with the length); depth runs
over the whole video on overlapping windows with one normalisation; the stereo windows are
letterboxed to the model's frame, converted by DDIM inversion and the StereoCrafter-Zero
sampler, and blended in their overlaps; by default (``--right composite``) the right view
is the source-resolution forward warp of the input, with the diffusion view only in the
holes, and the left output *is* the input (``szero_jax.pipelines.footage_job``).

Writes per video (a folder --input gets one sub-folder per video), through
``szero_jax.io.encode`` as ``generate`` does: left.mp4, right.mp4 and the --format layout
named for VR players and carrying its stereo tag (sbs_LRF_Full_SBS.mp4 with an st3d box;
Matroska StereoMode with --container mkv), at the source's frame rate and with its audio
(--codec / --crf / --pix_fmt / --container / --frame_packing_sei set the encoding;
--lossless: FFV1 in .mkv, frame-exact), report.html (sampled frames, disparity and its
histogram, holes, timings, metrics, settings; open it in a browser) and summary.json (files
with roles and stereo tags, settings, per-stage timings, frames per second, seam and
consistency metrics). Intermediate results live in <output_dir>/.convert-work/<name>/ until
the video is done; after Ctrl-C, SIGKILL or a failed write, --resume continues from the
last finished window (same output).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags

from experiments import common_flags as cf

cf.declare(__name__, "checkpoint", "output_dir", "seed", "format", "dtype",
           "compilation_cache_dir", "random_weights_for_testing", "prompt", "resume", "right",
           *cf.SAMPLING_FLAGS, *cf.DEPTH_FLAGS, *cf.STEREO_FLAGS, *cf.ENCODE_FLAGS)
flags.DEFINE_string("input", None, "A video file, or a folder whose videos are converted file "
                    "by file (default None: required; with a folder, --depth may be a folder of "
                    "<video name>.npy files)")
flags.DEFINE_integer("window", None, "Frames per depth-model window (default None: the depth "
                     "UNet's clip length; DepthCrafter's released infer uses 110). Stereo windows "
                     "are the video model's clip length")
flags.DEFINE_integer("overlap", None, "Frames shared by consecutive windows (default None: "
                     "half the window, seams within 5 % of a window's own change; fewer leave "
                     "visible seams in the hole fills; three quarters (6 of 8) puts them below "
                     "it for 1.9x the work; see BENCHMARK.md)")
flags.DEFINE_bool("lossless", False, "Write FFV1 in .mkv (frame-exact; the left output then "
                  "equals the input) instead of --codec at --crf; --container, if given, must "
                  "be mkv, and --pix_fmt yuv420p")
flags.DEFINE_bool("write_disparity", False, "Also write disparity.npy: the pixel disparity "
                  "used, float32 [T, H, W] at the source size")
flags.DEFINE_integer("devices", None, "Local devices the stereo windows are batched over, one "
                     "window each (default None: all)")
flags.DEFINE_bool("distributed", False, "Several hosts: call jax.distributed.initialize first "
                  "(each process converts its block of windows into the shared --output_dir, "
                  "process 0 assembles); the three flags below default to auto-detection")
flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0 "
                    "(default None: auto-detected, e.g. on Cloud TPU)")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes "
                     "(default None: auto-detected)")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index (default "
                     "None: auto-detected)")
FLAGS = flags.FLAGS
WORK = ".convert-work"
NEUTRAL_PROMPT = "a video"          # --prompt absent: a caption that names no content
NEUTRAL_PROMPT_WORLD = "a background"   # the same for the tiny family's world vocabulary


class Progress:
    """Prints per stage: frames done / total, frames per second, time left."""

    def __init__(self):
        self.start, self.stage = {}, None
        self.tty = sys.stdout.isatty()

    def __call__(self, stage, done, total):
        now = time.perf_counter()
        if stage not in self.start:
            self.start[stage] = (now, done)
        t0, d0 = self.start[stage]
        rate = (done - d0) / max(now - t0, 1e-9)
        line = f"[{stage}] frames {done}/{total}"
        if done > d0:
            line += f", {rate:.2f} fps, {(total - done) / rate:.0f} s left"
        print(("\r" + line) if self.tty else line, end="\n" if done >= total or not self.tty
              else "", flush=True)


def _models():
    from szero_jax import pipelines, tiny  # pylint: disable=import-outside-toplevel
    if FLAGS.random_weights_for_testing:
        import jax  # pylint: disable=import-outside-toplevel
        return pipelines.random_video_models(jax.random.PRNGKey(FLAGS.seed), tiny.VIDEO, tiny.VAE,
                                             tiny.TEXT, tiny.VISION, tiny.DEPTH_UNET, FLAGS.dtype)
    return pipelines.load_video_models(cf.checkpoint_path(FLAGS.checkpoint), FLAGS.dtype)


def _prompt(models):
    from szero_jax.models.tokenizer import WordTokenizer  # pylint: disable=import-outside-toplevel
    if FLAGS.prompt is not None:
        return FLAGS.prompt
    return NEUTRAL_PROMPT_WORLD if isinstance(models.tokenizer, WordTokenizer) else NEUTRAL_PROMPT


def _inputs():
    from szero_jax.io import stream  # pylint: disable=import-outside-toplevel
    if not FLAGS.input:
        raise ValueError("--input: expected a video file or a folder of videos")
    path = Path(FLAGS.input).expanduser()
    if path.is_dir():
        return stream.list_videos(path, "--input"), True
    if not path.exists():
        raise FileNotFoundError(f"--input: no file or folder at {path}")
    return [path], False


def _depth_for(source: Path):
    """--depth for one video: the file, or in a --depth folder the file named like the
    video (``<stem>.npy`` or a video ``<stem>.*``)."""
    if FLAGS.depth is None:
        return None
    depth = Path(FLAGS.depth).expanduser()
    if not depth.is_dir():
        return str(depth)
    found = sorted(p for p in depth.iterdir() if p.stem == source.stem and p.is_file())
    if not found:
        raise FileNotFoundError(f"--depth: the folder {depth} has no depth file for "
                                f"{source.name} (expected {source.stem}.npy or a video "
                                f"{source.stem}.*)")
    return str(found[0])


def _configs():
    import dataclasses  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.config import SamplingConfig  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.footage import FootageConfig  # pylint: disable=import-outside-toplevel
    sampling = cf.sampling_config(SamplingConfig.inversion())
    depth = cf.depth_config()
    footage = dataclasses.replace(FootageConfig(), right=FLAGS.right, overlap=FLAGS.overlap,
                                  depth_window=FLAGS.window, lossless=FLAGS.lossless,
                                  write_disparity=FLAGS.write_disparity)
    return sampling, depth, cf.stereo_config(), footage.validate()


def _delivery(info):
    """(EncodeConfig, container suffix) of one video: the encoding flags at its frame rate."""
    if FLAGS.lossless and FLAGS["container"].present and FLAGS.container != "mkv":
        raise ValueError(f"--container: --lossless writes FFV1, which goes in mkv; got "
                         f"--container={FLAGS.container}")
    encode = cf.encode_config(info.fps, lossless=FLAGS.lossless)
    return encode, ".mkv" if FLAGS.lossless else cf.container_suffix()


def main(argv):
    del argv
    if FLAGS.distributed:             # before any other JAX call
        import jax  # pylint: disable=import-outside-toplevel
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id)
    cf.enable_compilation_cache(FLAGS.compilation_cache_dir)
    from szero_jax import io  # pylint: disable=import-outside-toplevel
    from szero_jax.io import stream  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines import footage_job as J  # pylint: disable=import-outside-toplevel
    layouts = tuple(f for f in cf.formats(FLAGS.format))
    sampling, depth, stereo, footage = _configs()
    sources, folder = _inputs()
    infos = [stream.probe_video(p, "--input") for p in sources]    # every input, before work
    deliveries = [_delivery(info) for info in infos]
    out = cf.check_output_dir(FLAGS.output_dir)
    models = _models()
    prompt = _prompt(models)
    jobs = [J.FootageJob(info, prompt, sampling, depth, stereo, footage, _depth_for(src), layouts,
                         encode, container)
            for info, src, (encode, container) in zip(infos, sources, deliveries)]
    for job in jobs:                   # every check of every video before any conversion
        J.check_job(models, job)
    written = []
    for job, src in zip(jobs, sources):
        target = out / src.stem if folder else out
        print(f"converting {src} ({job.source.frames} frames, {job.source.width}x"
              f"{job.source.height}, {float(job.source.fps):.3f} fps) -> {target}")
        with cf.staged_outputs(target) as tmp:
            summary = J.convert_video(models, job, out / WORK / src.stem, tmp,
                                      devices=FLAGS.devices, resume=FLAGS.resume,
                                      progress=Progress())
            if summary is None:          # another host's process: process 0 writes
                print(f"converted this process's windows of {src}")
                continue
            summary["checkpoint"] = ("random (testing)" if FLAGS.random_weights_for_testing
                                     else cf.checkpoint_path(FLAGS.checkpoint) or "tiny family")
            summary["files"] += [{"path": "summary.json", "role": "summary"},
                                 {"path": "report.html", "role": "report"}]
            (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
            io.report.write_report(tmp / "report.html", J.report_frames(out / WORK / src.stem),
                                   summary, title=f"StereoCrafter-Zero footage: {src.name}")
        import shutil  # pylint: disable=import-outside-toplevel
        shutil.rmtree(out / WORK / src.stem, ignore_errors=True)
        written += [target / f["path"] for f in summary["files"]]
        m = summary["metrics"]
        print(f"{job.source.frames} frames in {summary['timings_s']['total_wall']:.1f} s "
              f"({summary['frames_per_second']:.2f} fps); holes {m['hole_fraction']:.3f}, "
              f"seam / inside hole change {m['seam_over_inside']}")
    cf.report_written(written)


if __name__ == "__main__":
    cf.set_defaults(output_dir="out/convert")
    app.run(main)
