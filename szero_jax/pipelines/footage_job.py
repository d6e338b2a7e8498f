"""Converting a video file of any length and resolution to stereo, streaming and resumable.

    info = io.stream.probe_video(path)
    job = FootageJob(info, prompt, sampling=SamplingConfig.inversion(steps=20))
    summary = convert_video(models, job, work_dir, out_dir, devices=None, resume=False)

Passes (frames stream through FFmpeg in chunks; nothing holds the whole video):
1. **Depth.** The depth model on overlapping windows of the letterboxed frames (one
   window per call on the first device), stitched (``footage.DepthStitcher``) into a
   memory-mapped relative disparity at the model's frame size; per-frame percentile bounds,
   smoothed over time: one normalisation for the whole video. A given map (``.npy`` read
   memory-mapped, or a grayscale video) is used instead; ``disparity_px`` maps as they are.
2. **Stereo windows.** Overlapping windows of the model's clip length, letterboxed to the
   model's frame, through the public stages (encode, context, DDIM inversion, the stereo
   sampler, decode), N windows per call on N devices (``footage_devices``). Each finished
   window's right view is saved in the work folder (atomically).
3. **Assembly**, interleaved with 2 as windows finish: fixed segments of frames, each a
   weighted blend of the windows covering a frame (``footage.frame_weights``), upsampled to
   the source size, composited (``composite.composite_right``; or the upsampled right view
   itself for ``right="latent"``), encoded per output role (``io.encode.VideoWriter`` with
   the job's ``EncodeConfig`` at the source frame rate) and committed with its metrics and
   the report's sampled frames.
4. **Mux.** The segments of each role are concatenated without re-encoding
   (``io.encode.mux``) into the output folder, named for VR players (``io.output_name``:
   ``left.mp4``, ``sbs_LRF_Full_SBS.mp4``, ...), with the layout's stereo tags (mp4 ``st3d``,
   Matroska StereoMode) and the source's audio. ``report_frames(work_dir)`` gives what
   ``io.report.write_report`` shows.

Resume. Every result is written to a temporary name and renamed, and a segment counts only
once its record (``seg_*.json``) exists, so after Ctrl-C, SIGKILL or a failing write the
work folder holds whole results; ``resume=True`` reuses them and computes the rest. Windows
run one per device (the same program for any device count or batch) and segments have
fixed frame ranges, so the output is bit-identical to an uninterrupted run.

Several hosts (``jax.distributed``): every process converts its block of the windows
(``footage.split_windows`` by ``jax.process_index()``) into the shared work folder and
process 0 assembles, waiting for the others' windows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import time
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax import metrics
from szero_jax.io import stereo as io_stereo
from szero_jax.io.arrays import to_uint8
from szero_jax.io.delivery import file_record, output_name
from szero_jax.io.encode import CONTAINERS, EncodeConfig, VideoWriter, mux
from szero_jax.io.report import ReportFrames
from szero_jax.io.stream import FrameReader, VideoInfo, probe_video
from szero_jax.pipelines import footage as F
from szero_jax.pipelines import footage_report
from szero_jax.pipelines import stages as S
from szero_jax.pipelines.bundles import VideoModels
from szero_jax.pipelines.common import StageTimer, check_config, check_prompt
from szero_jax.pipelines.composite import CompositeConfig, composite_right
from szero_jax.pipelines.config import DepthConfig, SamplingConfig
from szero_jax.pipelines.footage_devices import WindowPrograms, window_mesh, with_depth_window
from szero_jax.stereo import StereoCrafterZeroConfig, blur_depth, build_events

CHUNK = 8            # frames per jitted resize / composite call (padded: one compile)
POLL_S = 2.0         # several hosts: how often process 0 looks for the others' windows
LAYOUT_ROLES = io_stereo.LAYOUTS


@dataclasses.dataclass(frozen=True)
class FootageJob:
    """One video's conversion: the source, the prompt and every setting."""
    source: VideoInfo
    prompt: str
    sampling: SamplingConfig = SamplingConfig.inversion()
    depth: DepthConfig = DepthConfig()
    stereo: StereoCrafterZeroConfig = StereoCrafterZeroConfig()
    footage: F.FootageConfig = F.FootageConfig()
    depth_file: Optional[str] = None      # a .npy [T, H, W] or a grayscale video
    layouts: tuple = ("sbs",)             # io.stereo layouts written besides left / right
    # None: H.264 CRF 18 (EncodeConfig's defaults), or FFV1 with footage.lossless, at the
    # source's frame rate; a given config must have the source's fps and footage.lossless
    encode: Optional[EncodeConfig] = None
    container: Optional[str] = None       # ".mp4" / ".mkv"; None: ".mkv" if lossless else ".mp4"


Progress = Optional[Callable[[str, int, int], None]]   # (stage, frames done, frames total)


# ----------------------------------------------------------------------------- checks
def check_depth_file(path, info: VideoInfo, name: str = "depth"):
    """The given depth: a memory-mapped .npy [T, H, W] or a grayscale video matching the
    source's frame count and size (checked before any work). Returns (kind, value):
    ("npy", memmap) or ("video", VideoInfo)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name}: no depth file at {str(p)!r}")
    want = (info.frames, info.height, info.width)
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{name}: {str(p)!r} is not a readable .npy array: {err}") from err
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
        if tuple(arr.shape) != want:
            raise ValueError(f"{name}: expected shape {want} (the video's frames x height x "
                             f"width), got {tuple(arr.shape)}")
        return "npy", arr
    dinfo = probe_video(p, name)
    if (dinfo.frames, dinfo.height, dinfo.width) != want:
        raise ValueError(f"{name}: the depth video has {dinfo.frames} frames of "
                         f"{dinfo.height}x{dinfo.width}; expected {want[0]} of "
                         f"{want[1]}x{want[2]} (the input's)")
    return "video", dinfo


class _Plan(NamedTuple):
    sampling: SamplingConfig     # resolved
    depth: DepthConfig           # resolved (max_disparity)
    letterbox: F.Letterbox
    windows: tuple               # stereo windows
    overlap: int
    depth_windows: tuple         # () with a given depth
    depth_overlap: int
    depth_input: object          # None (model) or check_depth_file's result
    encode: EncodeConfig         # resolved: the source's fps, footage.lossless
    container: str               # ".mp4" or ".mkv"


def check_job(models: VideoModels, job: FootageJob) -> _Plan:
    """Every check before any work: the bundle, the configs, the prompt, the source's
    size, the depth source and the windows."""
    if not isinstance(models, VideoModels):
        raise ValueError(f"models: expected a VideoModels bundle, got {type(models).__name__}")
    if not isinstance(job, FootageJob):
        raise ValueError(f"job: expected a FootageJob, got {type(job).__name__}")
    check_prompt(job.prompt)
    check_config(job.sampling, SamplingConfig, "sampling")
    check_config(job.depth, DepthConfig, "depth")
    check_config(job.stereo, StereoCrafterZeroConfig, "stereo")
    check_config(job.footage, F.FootageConfig, "footage")
    build_events(job.stereo, job.sampling.plan_steps)        # validates the stereo schedule
    info = job.source
    if info.width % 2 or info.height % 2:
        raise ValueError(f"input: the frame size {info.width}x{info.height} is odd; the "
                         f"outputs (yuv420p, half layouts) need an even width and height "
                         f"(crop or pad the video by one pixel first)")
    for layout in job.layouts:
        if layout not in LAYOUT_ROLES:
            raise ValueError(f"layouts: expected a subset of {LAYOUT_ROLES}, got {layout!r}")
    encode, container = check_delivery(job)
    sampling = S.resolve(models, job.sampling)
    if job.stereo.guidance_rescale is not None:
        sampling = dataclasses.replace(sampling, guidance_rescale=job.stereo.guidance_rescale)
    depth = job.depth
    if depth.max_disparity is None:
        depth = dataclasses.replace(depth, max_disparity=models.config.max_disparity)
    source = depth.source or ("given" if job.depth_file else "model")
    if source == "given" and not job.depth_file:
        raise ValueError("depth: DepthConfig.source is 'given' but no depth file was passed")
    if source == "model" and job.depth_file:
        raise ValueError("depth: a depth file was passed, but DepthConfig.source is 'model'")
    if depth.kind == "disparity_px" and source == "model":
        raise ValueError("depth_kind: 'disparity_px' describes a given map; pass --depth")
    depth_input = check_depth_file(job.depth_file, info) if source == "given" else None
    if source == "model" and models.depth is None:
        raise ValueError("depth: the models have no depth network; pass a depth file")
    model_hw = tuple(int(s) * models.vae_factor for s in models.config.latent_size)
    length = models.num_frames
    overlap = job.footage.overlap_for(length)
    windows = F.plan_windows(info.frames, length, overlap)
    depth_windows, depth_overlap = (), 0
    if source == "model":
        dlen = job.footage.depth_window or models.depth.unet.config.num_frames
        depth_overlap = job.footage.overlap_for(dlen)
        depth_windows = F.plan_windows(info.frames, dlen, depth_overlap)
    return _Plan(sampling, depth, F.Letterbox((info.height, info.width), model_hw), windows,
                 overlap, depth_windows, depth_overlap, depth_input, encode, container)


def check_delivery(job: FootageJob) -> tuple:
    """The job's (EncodeConfig, container suffix), resolved and checked: the source's frame
    rate is kept, lossless (FFV1) goes in .mkv."""
    lossless, fps = job.footage.lossless, job.source.fps
    encode = EncodeConfig(fps=fps, lossless=lossless) if job.encode is None else job.encode
    if not isinstance(encode, EncodeConfig):
        raise ValueError(f"encode: expected an io.EncodeConfig, got {type(encode).__name__}")
    encode.validate()
    if encode.lossless != lossless:
        raise ValueError(f"encode: lossless={encode.lossless} but footage.lossless={lossless}; "
                         f"set both alike")
    if encode.rate != fps:
        raise ValueError(f"encode: fps {encode.rate} differs from the source's {fps}; footage "
                         f"keeps the source frame rate")
    container = job.container or (".mkv" if lossless else ".mp4")
    if container not in CONTAINERS:
        raise ValueError(f"container: expected one of {CONTAINERS}, got {container!r}")
    if lossless and container != ".mkv":
        raise ValueError(f"container: lossless (FFV1) is written to '.mkv', got {container!r}")
    return encode, container


def roles(job: FootageJob) -> tuple:
    return ("left", "right") + tuple(dict.fromkeys(job.layouts))


def _layout(role: str) -> Optional[str]:
    return role if role in LAYOUT_ROLES else None


# ----------------------------------------------------------------------------- work folder
def _settings(job: FootageJob, plan: _Plan) -> dict:
    def stat(path):
        st = os.stat(path)
        return {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    src = job.source
    return {"source": {**stat(src.path), "width": src.width, "height": src.height,
                       "frames": src.frames, "fps": str(src.fps)},
            "prompt": job.prompt, "depth_file": stat(job.depth_file) if job.depth_file else None,
            "sampling": dataclasses.asdict(plan.sampling), "depth": dataclasses.asdict(plan.depth),
            "stereo": dataclasses.asdict(job.stereo), "footage": dataclasses.asdict(job.footage),
            "layouts": list(job.layouts), "encode": _encode_settings(plan.encode),
            "container": plan.container, "version": 2}


def _encode_settings(encode: EncodeConfig) -> dict:
    return {k: str(v) if k == "fps" else v for k, v in dataclasses.asdict(encode).items()}


def _atomic_save(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_npy(path: Path, array) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))
            f.flush()
            os.fsync(f.fileno())
    _atomic_save(path, write)


def _save_json(path: Path, obj) -> None:
    _atomic_save(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, default=str)))


def prepare_work_dir(work_dir, job: FootageJob, plan: _Plan, resume: bool) -> Path:
    """The work folder of ``job``: reused with ``resume`` when its settings match (else a
    ValueError), emptied otherwise. Temporary files of an interrupted run are removed."""
    work = Path(work_dir)
    settings = _settings(job, plan)
    record = work / "settings.json"
    if resume and record.is_file():
        old = json.loads(record.read_text())
        if old != json.loads(json.dumps(settings, default=str)):
            changed = sorted(k for k in settings if json.dumps(settings[k], default=str)
                             != json.dumps(old.get(k), default=str))
            raise ValueError(f"resume: the work folder {str(work)!r} was made with other "
                             f"settings ({', '.join(changed)} differ); rerun without --resume")
    elif jax.process_index() == 0 and work.exists():
        shutil.rmtree(work)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        multihost_utils.sync_global_devices("footage work folder")
    for sub in ("depth", "stereo", "segments"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    for tmp in work.rglob("*.tmp*"):
        tmp.unlink(missing_ok=True)
    if jax.process_index() == 0 and not record.is_file():
        _save_json(record, settings)
    return work


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(POLL_S)


def committed_segments(work: Path) -> int:
    """How many output segments are complete (their records exist, in order)."""
    k = 0
    while (work / "segments" / f"seg_{k:06d}.json").is_file():
        k += 1
    return k


# ----------------------------------------------------------------------------- frames
@functools.partial(jax.jit, static_argnums=0)
def _fit(letterbox: F.Letterbox, frames_u8):
    return letterbox.to_model(frames_u8.astype(jnp.float32) / 255.0)


def _pad(x, n: int = CHUNK):
    """Pad a chunk [k, ...] to n rows by repeating its last (one compile per chunk size)."""
    x = np.asarray(x)
    return x if x.shape[0] == n else np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], 0)])


class _Frames:
    """Model-frame frames of a window range, read in order from one FrameReader (frames
    past the video's end repeat the last)."""

    def __init__(self, reader: FrameReader, letterbox: F.Letterbox, timer: StageTimer):
        self.reader, self.letterbox, self.timer = reader, letterbox, timer
        self.buf: dict[int, np.ndarray] = {}
        self.total = reader.info.frames

    def get(self, start: int, stop: int) -> np.ndarray:
        for t in [t for t in self.buf if t < start]:
            del self.buf[t]
        need = min(stop, self.total)
        if self.reader.position < start and start < self.total:
            self.reader.skip(start - self.reader.position)
        while self.reader.position < need:
            t0 = self.reader.position
            chunk = self.reader.read(CHUNK)
            fitted = np.asarray(self.timer.run("read", _fit, self.letterbox, _pad(chunk)))
            for i in range(chunk.shape[0]):
                self.buf[t0 + i] = fitted[i]
        return np.stack([self.buf[min(t, self.total - 1)] for t in range(start, stop)])


# ----------------------------------------------------------------------------- disparity
@functools.partial(jax.jit, static_argnames=("kind", "sigma"))
def _values(raw, kind: str, sigma: float):
    """A given map's values before normalisation: blurred, depth inverted."""
    d = raw.astype(jnp.float32)
    if sigma > 0:
        d = blur_depth(d, sigma)
    return 1.0 / d if kind == "depth" else d


@functools.partial(jax.jit, static_argnames=("letterbox", "scale", "convergence", "model_px"))
def _from_normalised(norm, letterbox, scale, convergence, model_px):
    """Normalised model-frame disparity -> pixels (model frame or source size)."""
    if model_px:
        mask = jnp.asarray(letterbox.content_mask())
        return jnp.where(mask, F.to_pixels(norm, scale, letterbox.content[3], convergence), 0.0)
    up = letterbox.from_model(norm)
    return F.to_pixels(up, scale, letterbox.source[1], convergence)


@functools.partial(jax.jit, static_argnames=("letterbox", "scale", "convergence", "to_model"))
def _given_pixels(values, bounds, letterbox, scale, convergence, to_model):
    px = values if bounds is None else F.to_pixels(F.normalise(values, bounds), scale,
                                                   letterbox.source[1], convergence)
    return letterbox.disparity_to_model(px) if to_model else px


class Disparity:
    """Pixel disparity of any frames of the video, from the stitched model depth or the
    given map (memory-mapped), with the video's one normalisation (``bounds`` [T, 2])."""

    def __init__(self, raw, bounds, plan: _Plan, from_model: bool):
        self.raw, self.bounds, self.plan, self.from_model = raw, bounds, plan, from_model
        self.total = raw.shape[0]

    def _rows(self, start, stop):
        idx = np.minimum(np.arange(start, stop), self.total - 1)
        return np.asarray(self.raw[idx[0]:idx[-1] + 1])[idx - idx[0]], idx

    def pixels(self, start: int, stop: int, model_frame: bool) -> np.ndarray:
        """[stop - start, ...] pixels at the model's frame (``model_frame``) or the source
        size; frames past the end repeat the last."""
        out = []
        d, lb = self.plan.depth, self.plan.letterbox
        for s in range(start, stop, CHUNK):
            e = min(s + CHUNK, stop)
            rows, idx = self._rows(s, e)
            b = None if self.bounds is None else _pad(self.bounds[idx])
            if self.from_model:
                norm = F.normalise(_pad(rows).astype(np.float32), b)
                px = _from_normalised(norm, lb, d.max_disparity, d.convergence, model_frame)
            else:
                values = _values(_pad(rows), d.kind, float(d.blur_sigma))
                px = _given_pixels(values, b, lb, d.max_disparity, d.convergence, model_frame)
            out.append(np.asarray(px)[:e - s])
        return np.concatenate(out)


def _given_values_check(raw, kind: str, name: str = "depth"):
    """NaN / inf anywhere, or depth <= 0 for kind 'depth': a ValueError (chunked scan)."""
    for s in range(0, raw.shape[0], 64):
        block = np.asarray(raw[s:s + 64], np.float32)
        bad = int(block.size - np.isfinite(block).sum())
        if bad:
            raise ValueError(f"{name}: contains {bad} NaN/inf values (frames {s}..{s + 63})")
        if kind == "depth" and (block <= 0).any():
            raise ValueError(f"{name}: depth must be > 0 everywhere for depth_kind 'depth' (it "
                             f"is inverted); frame {s + int(np.argwhere(block <= 0)[0][0])}")


def _depth_video_to_npy(dinfo: VideoInfo, path: Path) -> None:
    # uint8 as decoded (a float copy of a long 1080p video would not fit on a disk)
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), "w+", np.uint8,
                                    (dinfo.frames, dinfo.height, dinfo.width))
    with FrameReader(dinfo, gray=True) as reader:
        for chunk in reader.chunks(CHUNK):
            out[reader.position - chunk.shape[0]:reader.position] = chunk[..., 0]
    out.flush()
    del out
    os.replace(path.with_suffix(".tmp.npy"), path)


def given_disparity(job: FootageJob, plan: _Plan, work: Path, timer: StageTimer,
                    progress: Progress) -> Disparity:
    kind, value = plan.depth_input
    if kind == "video":
        target = work / "depth" / "given.npy"
        if not target.is_file():
            timer.run("depth", _depth_video_to_npy, value, target)
        raw = np.load(target, mmap_mode="r")
    else:
        raw = value
    d = plan.depth
    _given_values_check(raw, d.kind)
    if d.kind == "disparity_px":
        return Disparity(raw, None, plan, from_model=False)
    bounds_file = work / "depth" / "bounds.npy"
    if not bounds_file.is_file():
        rows = []
        for s in range(0, raw.shape[0], CHUNK):
            block = np.asarray(raw[s:s + CHUNK])
            vals = timer.run("depth", _values, _pad(block), d.kind, float(d.blur_sigma))
            rows.append(F.frame_bounds(np.asarray(vals)[:block.shape[0]]))
            if progress:
                progress("depth", min(s + CHUNK, raw.shape[0]), raw.shape[0])
        sigma = job.footage.bounds_sigma_s * float(job.source.fps)
        _save_npy(bounds_file, F.smooth_bounds(np.concatenate(rows), sigma))
    return Disparity(raw, np.load(bounds_file), plan, from_model=False)


def model_disparity(models: VideoModels, job: FootageJob, plan: _Plan, programs: WindowPrograms,
                    work: Path, timer: StageTimer, progress: Progress) -> Disparity:
    """Pass 1 with the depth model: windows (this process's block), then process 0
    stitches them into ``depth/rel.npy`` and the smoothed bounds."""
    ddir, info = work / "depth", job.source
    done = ddir / "done"
    keys = S.job_keys(plan.sampling.seed)
    if not done.exists():
        mine = F.split_windows(plan.depth_windows, jax.process_index(), jax.process_count())
        todo = [w for w in mine if not (ddir / f"win_{w.index:06d}.npy").is_file()]
        if todo:
            if progress:
                progress("depth", todo[0].start, info.frames)
            with FrameReader(info) as reader:
                frames = _Frames(reader, plan.letterbox, timer)
                for w in todo:
                    video = frames.get(w.start, w.stop)[None]
                    key = np.asarray(jax.random.fold_in(keys.depth, w.index))[None]
                    rel = programs.depth(video, key, timer)[0]
                    _save_npy(ddir / f"win_{w.index:06d}.npy", rel.astype(np.float32))
                    if progress:
                        progress("depth", min(w.stop, info.frames), info.frames)
        if jax.process_index() == 0:
            _stitch(job, plan, ddir, timer)
    _wait_for(done)
    return Disparity(np.load(ddir / "rel.npy", mmap_mode="r"), np.load(ddir / "bounds.npy"),
                     plan, from_model=True)


def _stitch(job: FootageJob, plan: _Plan, ddir: Path, timer: StageTimer) -> None:
    mask = plan.letterbox.content_mask()
    t_total = job.source.frames
    stitcher = F.DepthStitcher(plan.depth_windows, plan.depth_overlap, t_total, mask)
    rel_tmp = ddir / "rel.tmp.npy"
    # float16: half the disk of float32 (relative disparity needs ~1e-3, it has 5e-4)
    rel = np.lib.format.open_memmap(rel_tmp, "w+", np.float16, (t_total,) + plan.letterbox.model)
    bounds = np.zeros((t_total, 2))
    start = time.perf_counter()
    for w in plan.depth_windows:
        path = ddir / f"win_{w.index:06d}.npy"
        _wait_for(path)
        for t, frame in stitcher.add(w, np.load(path)):
            rel[t] = frame
            bounds[t] = F.frame_bounds(frame[None], mask)[0]
    rel.flush()
    del rel
    os.replace(rel_tmp, ddir / "rel.npy")
    sigma = job.footage.bounds_sigma_s * float(job.source.fps)
    _save_npy(ddir / "bounds.npy", F.smooth_bounds(bounds, sigma))
    _save_json(ddir / "alignments.json", stitcher.alignments)
    (ddir / "done").write_text("ok")
    for w in plan.depth_windows:
        (ddir / f"win_{w.index:06d}.npy").unlink(missing_ok=True)
    timer.timings["depth"] = timer.timings.get("depth", 0.0) + time.perf_counter() - start


# ----------------------------------------------------------------------------- assembly
@functools.partial(jax.jit, static_argnames=("letterbox", "composite", "latent"))
def _assemble(left_u8, d_src, fill_model, letterbox, composite: CompositeConfig, latent):
    left = left_u8.astype(jnp.float32) / 255.0
    fill = jnp.clip(letterbox.from_model(fill_model), 0.0, 1.0)
    comp = composite_right(left, d_src, fill, composite)
    right = fill if latent else comp.right
    right_u8 = jnp.round(jnp.clip(right, 0.0, 1.0) * 255.0).astype(jnp.uint8)
    lrc = metrics.left_right_consistency(left, right_u8.astype(jnp.float32) / 255.0, d_src)
    ctrl = metrics.left_right_consistency(left, left, d_src)
    return right_u8, comp.holes, lrc, ctrl


def _pixel_range(disparity: Disparity, width: int) -> tuple:
    """Every value the source-size disparity can take: normalised maps span
    ``to_pixels`` of [0, 1]; ``disparity_px`` maps their own (blurring stays inside it)."""
    d = disparity.plan.depth
    if disparity.from_model or disparity.bounds is not None:
        ends = [float(F.to_pixels(v, d.max_disparity, width, d.convergence)) for v in (0.0, 1.0)]
        return min(ends), max(ends)
    lo, hi = np.inf, -np.inf
    for s in range(0, disparity.total, 64):
        block = np.asarray(disparity.raw[s:s + 64], np.float32)
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return lo, hi


class _Assembler:
    """Pass 3: fixed segments of frames, each blended, composited, encoded per role
    (``io.encode.VideoWriter``, ``segments/<role>_<k>.mkv``) and committed with the running
    metrics and the report's histogram (``segments/seg_<k>.json``, written last) and its
    sampled frames (``segments/report_<k>.npz``)."""

    def __init__(self, job: FootageJob, plan: _Plan, disparity: Disparity, work: Path,
                 timer: StageTimer, progress: Progress):
        self.job, self.plan, self.disparity, self.timer = job, plan, disparity, timer
        self.progress, self.sdir, self.wdir = progress, work / "segments", work / "stereo"
        seg = job.footage.segment_frames
        t_total = job.source.frames
        self.segments = [(a, min(a + seg, t_total)) for a in range(0, t_total, seg)]
        self.seams = F.SeamMeter(plan.windows, plan.overlap)
        self.stats = {"lrc": 0.0, "ctrl": 0.0, "holes": 0.0, "frames": 0, "d_min": np.inf,
                      "d_max": -np.inf, "d_sum": 0.0}
        self.done = committed_segments(work)
        self.prev = None         # (right_u8, holes) of the last assembled frame
        self.report = footage_report.ReportSampler(t_total, job.source.width,
                                                   _pixel_range(disparity, job.source.width))
        if self.done:
            rec = json.loads((self.sdir / f"seg_{self.done - 1:06d}.json").read_text())
            self.seams.load(rec["seams"])
            self.report.load(rec["report"])
            self.stats = {k: (float(v) if k != "frames" else int(v)) for k, v in rec["stats"].items()}
            last = np.load(self.sdir / f"last_{self.done - 1:06d}.npz")
            self.prev = (last["right"], last["holes"])
        for f in self.sdir.iterdir():            # uncommitted segments of an interrupted run
            k = f.name.split("_")[-1].split(".")[0]
            if k.isdigit() and int(k) >= self.done and f.is_file():
                f.unlink()
        self.reader = None
        self._cache: dict[int, np.ndarray] = {}
        self.disparity_file = work / "disparity.npy" if job.footage.write_disparity else None
        self._disparity_out = None
        if self.disparity_file is not None:
            shape = (t_total, job.source.height, job.source.width)
            self._disparity_out = (np.load(self.disparity_file, mmap_mode="r+") if self.done
                                   and self.disparity_file.is_file() else
                                   np.lib.format.open_memmap(self.disparity_file, "w+",
                                                             np.float32, shape))

    @property
    def position(self) -> int:
        return self.segments[self.done][0] if self.done < len(self.segments) else \
            self.job.source.frames

    def ready(self) -> bool:
        """Whether every window covering the next segment is saved."""
        if self.done >= len(self.segments):
            return False
        a, b = self.segments[self.done]
        need = {k for t in range(a, b) for k in F.covering(self.plan.windows, t)}
        return all((self.wdir / f"win_{k:06d}.npy").is_file() for k in need)

    def _window(self, k: int) -> np.ndarray:
        if k not in self._cache:
            self._cache[k] = np.load(self.wdir / f"win_{k:06d}.npy")
        return self._cache[k]

    def _fill(self, t: int) -> np.ndarray:
        out = 0.0
        for k, w in F.frame_weights(self.plan.windows, self.plan.overlap, t):
            out = out + w * (self._window(k)[t - self.plan.windows[k].start].astype(np.float32)
                             / 255.0)
        return out

    def run_ready(self) -> None:
        while self.ready():
            self._segment()

    def _segment(self) -> None:
        job, plan, k = self.job, self.plan, self.done
        a, b = self.segments[k]
        if self.reader is None:
            self.reader = FrameReader(job.source).__enter__()
            if self.progress:
                self.progress("assemble", a, job.source.frames)
        if self.reader.position < a:
            self.reader.skip(a - self.reader.position)
        comp = job.footage.composite
        info = job.source
        with contextlib.ExitStack() as stack:
            # each file appears when complete (VideoWriter writes atomically); the segment
            # counts once its record exists. Tags and audio are added by the final mux.
            writers = {r: stack.enter_context(VideoWriter(self.sdir / f"{r}_{k:06d}.mkv",
                                                          plan.encode, layout=_layout(r)))
                       for r in roles(job)}
            for s in range(a, b, CHUNK):
                e = min(s + CHUNK, b)
                left = self.reader.read(e - s)
                d_src = self.disparity.pixels(s, e, model_frame=False)
                fill = np.stack([self._fill(t) for t in range(s, e)])
                right, holes, lrc, ctrl = self.timer.run(
                    "assemble", _assemble, _pad(left), _pad(d_src), _pad(fill), plan.letterbox,
                    comp, job.footage.right == "latent")
                right, holes = np.asarray(right)[:e - s], np.asarray(holes)[:e - s]
                self._measure(s, right, holes, np.asarray(lrc)[:e - s],
                              np.asarray(ctrl)[:e - s], d_src)
                self.report.add(s, left, right, d_src, holes)
                if self._disparity_out is not None:
                    self._disparity_out[s:e] = d_src
                start = time.perf_counter()
                for r, wr in writers.items():
                    wr.write(left if r == "left" else right if r == "right" else
                             to_uint8(io_stereo.stereo_layout(left, right, r), "frames", 4))
                self.timer.timings["write"] = (self.timer.timings.get("write", 0.0)
                                               + time.perf_counter() - start)
                if self.progress:
                    self.progress("assemble", e, info.frames)
            start = time.perf_counter()
        self.timer.timings["write"] += time.perf_counter() - start   # the writers' muxes
        if self._disparity_out is not None:
            self._disparity_out.flush()
        last = self.sdir / f"last_{k:06d}.npz"
        _atomic_save(last, lambda p: np.savez(p, right=self.prev[0], holes=self.prev[1]))
        kept = self.report.take()
        if kept is not None:
            _atomic_save(self.sdir / f"report_{k:06d}.npz", lambda p: np.savez(p, **kept))
        _save_json(self.sdir / f"seg_{k:06d}.json", {"frames": [a, b], "seams": self.seams.state(),
                                                     "stats": self.stats,
                                                     "report": self.report.state()})
        self.done += 1
        self._release(b)

    def _measure(self, s, right, holes, lrc, ctrl, d_src) -> None:
        for i in range(right.shape[0]):
            if self.prev is not None:
                self.seams.add(s + i, self.prev[0], self.prev[1], right[i], holes[i])
            self.prev = (right[i], holes[i])
        st = self.stats
        st["lrc"] += float(lrc.sum())
        st["ctrl"] += float(ctrl.sum())
        st["holes"] += float(holes.mean(axis=(1, 2)).sum())
        st["frames"] += int(right.shape[0])
        st["d_min"] = min(st["d_min"], float(d_src.min()))
        st["d_max"] = max(st["d_max"], float(d_src.max()))
        st["d_sum"] += float(d_src.mean(axis=(1, 2)).sum())

    def _release(self, upto: int) -> None:
        """Drop windows no later segment needs (their files too: process 0 owns them)."""
        for w in self.plan.windows:
            if w.stop <= upto or upto >= self.job.source.frames:
                self._cache.pop(w.index, None)
                (self.wdir / f"win_{w.index:06d}.npy").unlink(missing_ok=True)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.__exit__(None, None, None)
            self.reader = None

    def metrics(self) -> dict:
        st, n = self.stats, max(self.stats["frames"], 1)
        lrc, ctrl = st["lrc"] / n, st["ctrl"] / n
        return {"left_right_consistency": lrc,
                "left_right_consistency_input_vs_itself": ctrl,
                "hole_fraction": st["holes"] / n,
                "disparity_px": {"min": st["d_min"], "max": st["d_max"], "mean": st["d_sum"] / n},
                **self.seams.summary()}


# ----------------------------------------------------------------------------- the job
def _stereo_windows(job, plan, programs, disparity, work, timer, progress, assembler) -> None:
    """Pass 2 (this process's block of windows, N per call), with pass 3 as they finish."""
    wdir, info, n = work / "stereo", job.source, programs.size
    keys = S.job_keys(plan.sampling.seed)
    mine = F.split_windows(plan.windows, jax.process_index(), jax.process_count())
    seg = job.footage.segment_frames
    assembled = min(committed_segments(work) * seg, info.frames)   # their windows are gone
    todo = [w for w in mine if not (wdir / f"win_{w.index:06d}.npy").is_file()
            and (w.stop > assembled and assembled < info.frames)]
    if assembler is not None:
        assembler.run_ready()
    if todo:
        if progress:
            progress("stereo", todo[0].start, info.frames)
        with FrameReader(info) as reader:
            frames = _Frames(reader, plan.letterbox, timer)
            for i in range(0, len(todo), n):
                batch = todo[i:i + n]
                calls = batch + [batch[-1]] * (n - len(batch))   # pad the last call
                video = np.stack([frames.get(w.start, w.stop) for w in calls])
                d = np.stack([disparity.pixels(w.start, w.stop, model_frame=True) for w in calls])
                k = np.stack([np.asarray(jax.random.fold_in(keys.sample, w.index)) for w in calls])
                right = programs.stereo(video, d, k, timer)
                for w, r in zip(batch, right):
                    _save_npy(wdir / f"win_{w.index:06d}.npy", to_uint8(r, "right", 4))
                if progress:
                    progress("stereo", min(batch[-1].stop, info.frames), info.frames)
                if assembler is not None:
                    assembler.run_ready()
    if assembler is not None:
        while assembler.done < len(assembler.segments):
            assembler.run_ready()
            if assembler.done < len(assembler.segments):
                if jax.process_count() == 1:      # nobody else will write the window
                    raise RuntimeError(f"stereo: segment {assembler.done} lacks a window "
                                       f"result in {str(wdir)!r}")
                time.sleep(POLL_S)        # other hosts' windows


def convert_video(models: VideoModels, job: FootageJob, work_dir, out_dir, *,
                  devices: Optional[int] = None, resume: bool = False,
                  progress: Progress = None) -> Optional[dict]:
    """Convert ``job.source`` (see the module docstring); the outputs (``roles(job)``, named
    by ``io.output_name``, tagged, with the source's audio) are written into ``out_dir``
    (use a staging folder: they are complete when this returns), the intermediate results
    into ``work_dir`` (``report_frames(work_dir)`` reads the report's frames from it).
    Returns the summary (None on processes other than 0)."""
    start = time.perf_counter()
    plan = check_job(models, job)
    mesh = window_mesh(devices)
    out_dir = Path(out_dir)
    work = prepare_work_dir(work_dir, job, plan, resume)
    timer = StageTimer()
    if plan.depth_windows:
        models = with_depth_window(models, plan.depth_windows[0].stop - plan.depth_windows[0].start)
    programs = WindowPrograms(models, mesh, job.prompt, plan.sampling, job.stereo, plan.depth)
    if plan.depth_input is None:
        disparity = model_disparity(models, job, plan, programs, work, timer, progress)
    else:
        disparity = given_disparity(job, plan, work, timer, progress)
    assembler = (_Assembler(job, plan, disparity, work, timer, progress)
                 if jax.process_index() == 0 else None)
    try:
        _stereo_windows(job, plan, programs, disparity, work, timer, progress, assembler)
    finally:
        if assembler is not None:
            assembler.close()
    if assembler is None:
        return None
    t0 = time.perf_counter()
    files = []
    # exact segment lengths: no drift from Matroska's 1 ms timestamps against the audio
    durations = [Fraction(b - a) / job.source.fps for a, b in assembler.segments]
    for r in roles(job):
        segs = [work / "segments" / f"{r}_{k:06d}.mkv" for k in range(len(assembler.segments))]
        name = output_name(r, plan.container)
        mux(out_dir / name, segs, layout=_layout(r), audio_from=job.source, durations=durations)
        files.append(file_record(r, name, plan.container, plan.encode))
    if assembler.disparity_file is not None:
        assembler._disparity_out.flush()              # pylint: disable=protected-access
        assembler._disparity_out = None               # pylint: disable=protected-access
        os.replace(assembler.disparity_file, out_dir / "disparity.npy")
        files.append({"path": "disparity.npy", "role": "disparity"})
    timer.timings["mux"] = time.perf_counter() - t0
    total = time.perf_counter() - start
    stage_total = sum(timer.timings.values())
    return {
        "input": job.source.path, "prompt": job.prompt, "frames": job.source.frames,
        "width": job.source.width, "height": job.source.height, "fps": str(job.source.fps),
        "audio": job.source.audio_codec, "files": files,
        "windows": {"stereo": len(plan.windows), "stereo_length": models.num_frames,
                    "overlap": plan.overlap, "depth": len(plan.depth_windows),
                    "depth_length": (plan.depth_windows[0].stop - plan.depth_windows[0].start
                                     if plan.depth_windows else None),
                    "depth_overlap": plan.depth_overlap},
        "model_frame": {"size": list(plan.letterbox.model),
                        "content": list(plan.letterbox.content)},
        "devices": programs.size, "processes": jax.process_count(),
        "settings": {"sampling": dataclasses.asdict(plan.sampling),
                     "depth": dataclasses.asdict(plan.depth),
                     "stereo": dataclasses.asdict(job.stereo),
                     "footage": dataclasses.asdict(job.footage), "depth_file": job.depth_file,
                     "layouts": list(job.layouts), "prompt": job.prompt,
                     "encode": _encode_settings(plan.encode), "container": plan.container},
        "timings_s": {**timer.timings, "total_wall": total},
        "stage_share": {k: v / stage_total for k, v in timer.timings.items()},
        "frames_per_second": job.source.frames / total,
        "metrics": assembler.metrics(),
    }


def report_frames(work_dir) -> ReportFrames:
    """What report.html shows of the conversion finished in ``work_dir`` (before it is
    removed): the sampled frames of the outputs, their disparity and holes, and the
    histogram of the whole video's disparity (``footage_report``)."""
    sdir = Path(work_dir) / "segments"
    last = committed_segments(Path(work_dir)) - 1
    if last < 0:
        raise FileNotFoundError(f"work_dir: no committed segments in {str(sdir)!r}")
    state = json.loads((sdir / f"seg_{last:06d}.json").read_text())["report"]
    return footage_report.report_frames(sdir, state)
