"""Footage conversion on procedural-world clips with ground truth (results: BENCHMARK.md
"Footage conversion"): ``experiments.convert_video`` run as a user would, in subprocesses.

Parts (``--footage_parts``, default all):
* ``overlap``: the seam metric against the overlap (2, 3, 4 frames of 8) on one set of
  windows, in process at the tiny family's frame size (what ``--overlap``'s default rests on).
* ``quality``: a --frames clip (200 at 160x256 by default: twice the tiny family's frame,
  longer than any window) with an AAC audio track, converted losslessly with the true
  disparity (``--depth_kind disparity_px --blur_sigma 0``) and with the depth model, each
  with ``--right composite`` and ``latent``. Checks: the left output equals the input; on
  pixels more than 4 px from every hole the right view equals the forward warp of the input
  by the disparity used; the audio stream is kept. Scores: whole-frame and disoccluded-hole
  PSNR / SSIM / LPIPS against the world's true right view, next to stretch and Telea
  (``experiments.baselines``) with the same disparity at the same resolution; seam metrics
  and throughput (frames per second, share per stage) from summary.json.
* ``memory``: peak resident memory of the converter for 100 and 400 frames.
* ``devices``: outputs of 1, 2 and 4 forced CPU devices, compared bit for bit.
* ``resume``: a run killed with SIGKILL halfway through the stereo windows, then resumed,
  against an uninterrupted run (H.264 outputs: bytes and decoded frames).

    python -m experiments.benchmark_footage --parts quality --output_json out/footage.json
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments import common_flags as cf

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("overlap", "quality", "memory", "devices", "resume")
SCENE_SEED = 1_000_003      # a held-out world scene (seeds >= HELDOUT_SEED_START)
FPS = Fraction(24)

cf.declare(__name__, "steps", "height", "width", "frames", "output_json", "seed")
flags.DEFINE_list("footage_parts", list(PARTS), f"Parts to run, of {PARTS}")
flags.DEFINE_integer("memory_short", 100, "Frames of the short memory run")
flags.DEFINE_integer("memory_long", 400, "Frames of the long memory run")
flags.DEFINE_string("footage_dir", None, "Keep the clips and outputs here (default None: a "
                    "temporary folder, deleted at the end)")
FLAGS = flags.FLAGS
# Fast sampler settings for the runs whose point is not the quality (memory, devices,
# resume): one restart round, no refinement.
FAST = ("--restart_steps", "1", "--restart_rounds", "1", "--refine_rounds", "0")


# ----------------------------------------------------------------------------- clips
def make_clip(folder: Path, frames: int, height: int, width: int, audio: bool = True,
              seed: int = SCENE_SEED):
    """A world clip: (input video path (FFV1 .mkv, AAC audio), disparity .npy, Scene)."""
    from szero_jax import world  # pylint: disable=import-outside-toplevel
    from szero_jax.io import EncodeConfig, VideoWriter  # pylint: disable=import-outside-toplevel
    from szero_jax.io.stream import FFMPEG  # pylint: disable=import-outside-toplevel
    scene = world.make_scene(seed, height, width, frames)
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / f"clip{frames}.mkv"
    silent = folder / f".clip{frames}_silent.mkv" if audio else video   # hidden: not listed
    with VideoWriter(silent, EncodeConfig(fps=FPS, lossless=True)) as w:
        for s in range(0, frames, 32):
            w.write(np.round(scene.left[s:s + 32] * 255).astype(np.uint8))
    if audio:
        subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(silent), "-f", "lavfi", "-i",
                        "sine=frequency=440:sample_rate=44100", "-map", "0:v", "-map", "1:a",
                        "-c:v", "copy", "-c:a", "aac", "-t", f"{frames / float(FPS):.6f}",
                        str(video)], check=True)
        silent.unlink()
    disparity = folder / f"clip{frames}_disparity.npy"
    np.save(disparity, scene.disparity.astype(np.float32))
    return video, disparity, scene


def convert(args, env_devices: int | None = None, timeout: int = 5400,
            threads: int | None = None):
    """Run the converter; returns (CompletedProcess, peak RSS of it in MB). ``env_devices``:
    forced CPU devices; ``threads``: XLA:CPU's intra-op pool (PJRT_NPROC, see ``devices``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    if env_devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={env_devices}"
    if threads:
        env["PJRT_NPROC"] = str(threads)
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
               "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m",
                           "experiments.convert_video", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"convert_video failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    peak = [int(line.split()[1]) for line in proc.stdout.splitlines()
            if line.startswith("PEAK_RSS_KB")]
    return proc, peak[-1] / 1024.0


def output_names(suffix: str) -> tuple:
    """The converter's left, right and (default --format) SBS file names."""
    from szero_jax.io import output_name  # pylint: disable=import-outside-toplevel
    return tuple(output_name(role, suffix) for role in ("left", "right", "sbs"))


def read_all(path) -> np.ndarray:
    from szero_jax.io.stream import FrameReader, probe_video  # pylint: disable=import-outside-toplevel
    info = probe_video(path)
    with FrameReader(info) as r:
        return r.read(info.frames)


# ----------------------------------------------------------------------------- quality
def check_outputs(out: Path, video: Path, disparity: np.ndarray, ext: str = ".mkv") -> dict:
    """Exactness checks of one conversion's outputs against its input and disparity."""
    from scipy.ndimage import distance_transform_edt  # pylint: disable=import-outside-toplevel
    from experiments.baselines import warp_left  # pylint: disable=import-outside-toplevel
    from szero_jax.io.stream import probe_video, streams  # pylint: disable=import-outside-toplevel
    src, left, right = read_all(video), read_all(out / f"left{ext}"), read_all(out / f"right{ext}")
    warped, holes, _ = warp_left(src.astype(np.float32) / 255.0, disparity)
    far = np.stack([distance_transform_edt(~h) for h in holes]) > 4
    w8 = np.round(warped * 255.0).astype(np.uint8)
    audio = [s for s in streams(out / f"right{ext}") if s.startswith("Audio")]
    src_info, out_info = probe_video(video), probe_video(out / f"right{ext}")
    return {"left_equals_input": bool(np.array_equal(src, left)),
            "right_equals_warp_beyond_4px": bool(np.array_equal(right[far], w8[far])),
            "pixels_beyond_4px": float(far.mean()),
            "max_abs_diff_beyond_4px": int(np.abs(right[far].astype(int) - w8[far]).max()),
            "audio_streams": audio, "audio_kept": bool(audio),
            "frames_in_out": [src_info.frames, out_info.frames],
            "duration_diff_frames": abs(src_info.duration_s - out_info.duration_s) * float(FPS)}


def quality(folder: Path, steps: int, frames: int = 200, height: int = 160,
            width: int = 256) -> dict:
    from experiments import baselines as B  # pylint: disable=import-outside-toplevel
    video, disparity_file, scene = make_clip(folder, frames, height, width)
    truth = scene.right
    gt = scene.disparity.astype(np.float32)
    results = {"clip": {"frames": frames, "height": height, "width": width,
                        "seed": SCENE_SEED, "caption": scene.caption, "steps": steps}}
    runs = {"gt": ["--depth", disparity_file, "--depth_kind", "disparity_px", "--blur_sigma", "0"],
            "model": []}
    for depth_name, depth_args in runs.items():
        used = gt
        for right in ("composite", "latent"):
            out = folder / f"out_{depth_name}_{right}"
            args = ["--input", video, "--output_dir", out, "--lossless", "--right", right,
                    "--steps", steps, "--write_disparity", *depth_args]
            start = time.perf_counter()
            _, peak = convert(args)
            wall = time.perf_counter() - start
            summary = json.loads((out / "summary.json").read_text())
            used = np.load(out / "disparity.npy")
            checks = check_outputs(out, video, used)
            pred = read_all(out / "right.mkv").astype(np.float32) / 255.0
            row = {"scores": B.score_view(pred, truth, scene.disoccluded), "checks": checks,
                   "metrics": summary["metrics"], "timings_s": summary["timings_s"],
                   "stage_share": summary["stage_share"],
                   "frames_per_second": summary["frames_per_second"], "peak_rss_mb": peak,
                   "wall_s": wall, "windows": summary["windows"]}
            results[f"{depth_name}_{right}"] = row
            print(f"{depth_name}/{right}: {json.dumps(row['scores'])}\n  checks "
                  f"{json.dumps(checks)}\n  seams {summary['metrics']['seam_over_inside']}, "
                  f"{summary['frames_per_second']:.3f} fps", flush=True)
        left = scene.left
        for name in ("stretch", "telea"):
            pred = B.BASELINES[name](left, used)
            results[f"{depth_name}_{name}"] = {"scores": B.score_view(pred, truth,
                                                                      scene.disoccluded)}
            print(f"{depth_name}/{name}: {json.dumps(results[f'{depth_name}_{name}']['scores'])}")
    return results


# ----------------------------------------------------------------------------- overlap
def overlap(frames: int = 48, steps: int = 10, overlaps=(2, 3, 4, 5, 6)) -> dict:
    """Seams against the overlap, in process at the tiny family's frame (80x128): the same
    windows (one StereoCrafter-Zero conversion per window start) blended with each overlap,
    composited with the true disparity; the hole change at seam pairs and inside pairs
    (``footage.SeamMeter``), and the change a single window makes between its own
    consecutive frames (first frame excluded: the image-conditioned one) as the reference."""
    import jax  # pylint: disable=import-outside-toplevel
    from szero_jax import pipelines, world  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines import footage as F  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines import stages as S  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.common import StageTimer  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.composite import composite_right  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines.footage_devices import WindowPrograms, window_mesh  # pylint: disable=import-outside-toplevel
    from szero_jax.stereo import StereoCrafterZeroConfig  # pylint: disable=import-outside-toplevel
    models = pipelines.load_video_models(None)
    length = models.num_frames
    h, w = (s * models.vae_factor for s in models.config.latent_size)
    scene = world.make_scene(SCENE_SEED, h, w, frames)
    sampling = S.resolve(models, SamplingConfig.inversion(steps=steps))
    programs = WindowPrograms(models, window_mesh(1), "a background", sampling,
                              StereoCrafterZeroConfig(), DepthConfig())
    timer, keys, cache = StageTimer(), S.job_keys(0), {}

    def window(start):
        if start not in cache:
            key = np.asarray(jax.random.fold_in(keys.sample, start))[None]
            cache[start] = programs.stereo(scene.left[None, start:start + length],
                                           scene.disparity[None, start:start + length], key,
                                           timer)[0]
        return cache[start]

    holes = np.asarray(composite_right(scene.left, scene.disparity, scene.left).holes)
    change = lambda a, b, m: float(np.abs(a.astype(np.float32) - b)[m].mean())
    out = {"frames": frames, "size": [h, w], "steps": steps, "window": length}
    for o in overlaps:
        wins = F.plan_windows(frames, length, o)
        fill = np.stack([sum(wt * window(wins[k].start)[t - wins[k].start]
                             for k, wt in F.frame_weights(wins, o, t)) for t in range(frames)])
        right = np.round(np.asarray(composite_right(scene.left, scene.disparity, fill).right)
                         * 255.0)
        meter = F.SeamMeter(wins, o)
        for t in range(1, frames):
            meter.add(t, right[t - 1], holes[t - 1], right[t], holes[t])
        single = [change(window(win.start)[i], window(win.start)[i - 1],
                         holes[win.start + i] & holes[win.start + i - 1])
                  for win in wins for i in range(2, length)
                  if win.start + i < frames and (holes[win.start + i] & holes[win.start + i - 1]).any()]
        row = {**meter.summary(), "windows": len(wins),
               "single_window_change": float(np.mean(single))}
        row["seam_over_single_window"] = row["hole_change_at_seams"] / row["single_window_change"]
        out[f"overlap_{o}"] = row
        print(f"overlap {o}: {len(wins)} windows, seams {row['hole_change_at_seams']:.4f}, inside "
              f"{row['hole_change_inside_windows']:.4f} (ratio {row['seam_over_inside']:.3f}), "
              f"single window {row['single_window_change']:.4f} (seams / it "
              f"{row['seam_over_single_window']:.3f})", flush=True)
    return out


# ----------------------------------------------------------------------------- memory
def memory(folder: Path, short: int = 100, long: int = 400, height: int = 160,
           width: int = 256) -> dict:
    out = {}
    for frames in (short, long):
        video, disparity, _ = make_clip(folder, frames, height, width, audio=False)
        args = ["--input", video, "--output_dir", folder / f"mem{frames}", "--depth", disparity,
                "--depth_kind", "disparity_px", "--blur_sigma", "0", "--steps", "4", *FAST]
        start = time.perf_counter()
        _, peak = convert(args)
        out[frames] = {"peak_rss_mb": peak, "wall_s": time.perf_counter() - start}
        print(f"memory {frames} frames: peak RSS {peak:.0f} MB", flush=True)
    lo, hi = out[short]["peak_rss_mb"], out[long]["peak_rss_mb"]
    out["long_over_short"] = hi / lo
    return out


# ----------------------------------------------------------------------------- devices
def devices(folder: Path, frames: int = 40, height: int = 160, width: int = 256) -> dict:
    """1, 2 and 4 forced CPU devices, each run with XLA:CPU's intra-op thread pool pinned to
    4 threads: XLA:CPU sizes the one pool its devices share as max(PJRT_NPROC or the cores,
    devices), and a convolution's rounding depends on the pool's size, so with fewer than 4
    cores 4 forced devices would otherwise also mean more threads and other rounding (the VAE
    decoder's 16 -> 3 channel convolution: ~4e-7), whatever the mesh."""
    video, disparity, _ = make_clip(folder, frames, height, width, audio=False)
    outs, wall = {}, {}
    for n in (1, 2, 4):
        out = folder / f"dev{n}"
        start = time.perf_counter()
        convert(["--input", video, "--output_dir", out, "--depth", disparity, "--depth_kind",
                 "disparity_px", "--blur_sigma", "0", "--steps", "4", "--lossless",
                 "--devices", n, *FAST], env_devices=n, threads=4)
        wall[n] = time.perf_counter() - start
        outs[n] = {f: (out / f).read_bytes() for f in output_names(".mkv")}
        outs[n]["frames"] = read_all(out / "right.mkv")
    same = {n: all(outs[n][f] == outs[1][f] for f in output_names(".mkv")) for n in (2, 4)}
    frames_same = {n: bool(np.array_equal(outs[n]["frames"], outs[1]["frames"])) for n in (2, 4)}
    diff = {n: np.abs(outs[n]["frames"].astype(int) - outs[1]["frames"]) for n in (2, 4)}
    differing = {n: int((d > 0).sum()) for n, d in diff.items()}
    print(f"devices: files identical to 1 device {same}, decoded right views {frames_same}, "
          f"differing uint8 values {differing} of {diff[2].size}, max "
          f"{ {n: int(d.max()) for n, d in diff.items()} }, wall s "
          f"{ {n: round(t, 1) for n, t in wall.items()} }")
    return {"bytes_identical": same, "right_frames_identical": frames_same, "wall_s": wall,
            "threads": 4,
            "right_values_differing": differing, "right_values": int(diff[2].size),
            "right_max_abs_diff": {n: int(d.max()) for n, d in diff.items()}}


# ----------------------------------------------------------------------------- resume
def kill_halfway(args, frames: int, env=None) -> str:
    """Start the converter and SIGKILL it once the stereo pass reports half the frames."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "experiments.convert_video", *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("[stereo] frames "):
            done = int(line.split()[2].split("/")[0])
            if done >= frames // 2:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    return "".join(seen[-5:])


def resume(folder: Path, frames: int = 150, height: int = 160, width: int = 256) -> dict:
    video, disparity, _ = make_clip(folder, frames, height, width)
    base = ["--input", video, "--depth", disparity, "--depth_kind", "disparity_px",
            "--blur_sigma", "0", "--steps", "4", *FAST]
    convert([*base, "--output_dir", folder / "whole"])
    tail = kill_halfway([*base, "--output_dir", folder / "killed"], frames)
    work = folder / "killed" / ".convert-work" / video.stem
    kept = sorted(p.name for p in (work / "stereo").iterdir()) if work.is_dir() else []
    segments = sorted(p.name for p in (work / "segments").glob("seg_*.json")) if work.is_dir() else []
    partial = sorted(p.name for p in (folder / "killed").glob("*.mp4"))
    convert([*base, "--output_dir", folder / "killed", "--resume"])
    names = output_names(".mp4")
    same = {n: (folder / "whole" / n).read_bytes() == (folder / "killed" / n).read_bytes()
            for n in names}
    decoded = bool(np.array_equal(read_all(folder / "whole" / "right.mp4"),
                                  read_all(folder / "killed" / "right.mp4")))
    print(f"resume: killed after {tail.strip().splitlines()[-1]!r}; kept {len(kept)} windows, "
          f"{len(segments)} segments, final files before resume {partial}; identical {same}, "
          f"decoded right identical {decoded}")
    return {"windows_kept_after_kill": len(kept), "segments_kept_after_kill": len(segments),
            "final_files_after_kill": partial, "bytes_identical": same,
            "right_frames_identical": decoded}


def main(argv):
    del argv
    unknown = set(FLAGS.footage_parts) - set(PARTS)
    if unknown:
        raise ValueError(f"--footage_parts: expected a subset of {PARTS}, got {sorted(unknown)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="footage-") as tmp:
        folder = Path(FLAGS.footage_dir or tmp)
        for part in FLAGS.footage_parts:
            start = time.perf_counter()
            size = dict(height=FLAGS.height, width=FLAGS.width)
            if part == "overlap":
                results[part] = overlap()
            elif part == "quality":
                results[part] = quality(folder / part, FLAGS.steps, FLAGS.frames, **size)
            elif part == "memory":
                results[part] = memory(folder / part, FLAGS.memory_short, FLAGS.memory_long,
                                       **size)
            else:
                results[part] = {"devices": devices, "resume": resume}[part](folder / part,
                                                                             **size)
            results[part]["part_wall_s"] = time.perf_counter() - start
    if FLAGS.output_json:
        Path(FLAGS.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(FLAGS.output_json).write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str)[:6000])


if __name__ == "__main__":
    cf.set_defaults(frames=200, height=160, width=256, steps=20,
                    output_json="out/benchmark_footage.json")
    app.run(main)
