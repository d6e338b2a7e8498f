"""Metrics over a folder of stereo outputs: prints a table and writes ``metrics.json``.

    python -m experiments.evaluate --input_dir out/demo
    python -m experiments.evaluate --input_dir out/eval --clip_checkpoint tiny --lpips=false

A *sample* is a pair of files ``<name>left.<ext>`` and ``<name>right.<ext>`` in the folder
(``<name>`` may be empty or end in ``_``, ``-`` or ``.``: ``left.mp4``, ``cat_left.png``,
``cat.left.mp4``), videos (.mp4 .mov .mkv .webm .gif) or images (.png .jpg .jpeg). Optional
companions with the same ``<name>``:
    ``<name>disparity.npy``  the intended disparity of the left view, pixels, [T, H, W] or
                             [H, W] (x_right = x_left - d), e.g. ``np.save`` of a pipeline
                             result's ``.disparity``
    ``<name>right_gt.<ext>`` (or ``<name>gt_right.<ext>``) a ground-truth right view
Per sample (szero_jax.metrics): vertical disparity (rows; 0 = rectified), left-right
consistency (with a disparity: mean abs error of the right view backward-warped onto the
left over visible pixels), temporal flicker (videos: right/left frame-difference energy),
PSNR / SSIM / LPIPS of the right view against the ground truth, CLIP-F (with
``--clip_checkpoint``: 100 x cosine of matching left/right CLIP image embeddings). The last
row of the table is the mean over samples.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from absl import app, flags

from experiments import common_flags

VIDEO_EXT = (".mp4", ".mov", ".mkv", ".webm", ".gif")
IMAGE_EXT = (".png", ".jpg", ".jpeg")
METRICS_FILE = "metrics.json"

flags.DEFINE_string("input_dir", None, "Folder of outputs: <name>left.* / <name>right.* pairs "
                    "(+ optional <name>disparity.npy, <name>right_gt.*) (required, no default)")
common_flags.declare(__name__, "output_dir", "lpips", "compilation_cache_dir")
flags.DEFINE_string("clip_checkpoint", None,
                    "CLIP vision tower for CLIP-F: a clip_vision checkpoint (convert.py "
                    "--family openclip writes <dir>/vision), a model folder with "
                    "image_encoder/, or 'tiny'; unset (default): no CLIP-F")
flags.DEFINE_integer("max_shift", 8, "Largest vertical offset searched (rows)")

FLAGS = flags.FLAGS

COLUMNS = ("vertical_disparity", "lr_consistency", "temporal_flicker", "psnr", "ssim", "lpips",
           "clip_f")


def _split_name(path: Path, role: str):
    m = re.fullmatch(rf"(.*?){role}", path.stem)
    return None if m is None else m.group(1)


def _find(folder: Path, prefix: str, stem: str, exts):
    for ext in exts:
        p = folder / f"{prefix}{stem}{ext}"
        if p.is_file():
            return p
    return None


def discover(input_dir) -> list[dict]:
    """The samples in ``input_dir``: [{name, left, right, disparity, gt}] (paths or None)."""
    folder = Path(input_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--input_dir: no folder at {folder}")
    samples = []
    for left in sorted(folder.iterdir()):
        ext = left.suffix.lower()
        if ext not in VIDEO_EXT + IMAGE_EXT or left.name.startswith("."):
            continue
        prefix = _split_name(left, "left")
        if prefix is None:
            continue
        exts = VIDEO_EXT if ext in VIDEO_EXT else IMAGE_EXT
        right = _find(folder, prefix, "right", exts)
        if right is None:
            raise FileNotFoundError(f"--input_dir: {left.name} has no matching "
                                    f"{prefix}right.<ext> in {folder}")
        samples.append(dict(
            name=prefix.rstrip("_-.") or folder.name, left=left, right=right,
            disparity=_find(folder, prefix, "disparity", (".npy",)),
            gt=_find(folder, prefix, "right_gt", exts) or _find(folder, prefix, "gt_right", exts)))
    if not samples:
        raise ValueError(f"--input_dir: {folder} holds no <name>left.<ext> / <name>right.<ext> "
                         f"pairs (ext in {VIDEO_EXT + IMAGE_EXT})")
    return samples


def _read(path: Path):
    """[T, H, W, 3] float32 in [0, 1] (images get T = 1) and whether it is a video."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import io  # pylint: disable=import-outside-toplevel
    if path.suffix.lower() in VIDEO_EXT:
        return io.read_video(path)[0], True
    return np.asarray(io.read_image(path))[None], False


def clip_embedder(spec: str):
    """frames [N, H, W, 3] in [0, 1] -> CLIP image embeddings [N, D] from a clip_vision
    checkpoint ('tiny' = the shipped tiny family's image encoder)."""
    import jax  # pylint: disable=import-outside-toplevel
    from szero_jax import checkpoints  # pylint: disable=import-outside-toplevel
    from szero_jax.models.clip import CLIPVisionEncoder, preprocess_image  # pylint: disable=import-outside-toplevel
    path = checkpoints.TINY_DIR / "image_encoder" if spec == common_flags.TINY else Path(spec)
    if (path / "image_encoder").is_dir():
        path = path / "image_encoder"
    elif (path / "vision").is_dir():
        path = path / "vision"
    params, cfg = checkpoints.load_params(path, "clip_vision")
    if isinstance(params, dict) and set(params) == {"params"}:
        params = params["params"]
    model = CLIPVisionEncoder(cfg)

    @jax.jit
    def embed(p, frames):
        return model.apply({"params": p}, preprocess_image(frames * 2.0 - 1.0, cfg.image_size))[1]

    return lambda frames: embed(params, frames)


def evaluate_sample(sample: dict, use_lpips: bool = True, embed_fn=None, max_shift: int = 8):
    """{metric: float or None} for one sample (None = not applicable)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import metrics  # pylint: disable=import-outside-toplevel
    left, is_video = _read(sample["left"])
    right, _ = _read(sample["right"])
    if left.shape != right.shape:
        raise ValueError(f"{sample['right'].name}: shape {right.shape} differs from "
                         f"{sample['left'].name}'s {left.shape}")
    row = dict.fromkeys(COLUMNS)
    h = left.shape[1]
    shift = min(max_shift, h // 2 - 1)
    if shift >= 1:
        row["vertical_disparity"] = float(np.mean(metrics.vertical_disparity(
            left, right, max_shift=shift)))
    if sample["disparity"] is not None:
        d = np.load(sample["disparity"], allow_pickle=False).astype(np.float32)
        if d.ndim == 2:
            d = d[None]
        if d.shape != left.shape[:-1]:
            raise ValueError(f"{sample['disparity'].name}: disparity must have shape "
                             f"{left.shape[:-1]} ([T, H, W] of the left view), got {d.shape}")
        if not np.all(np.isfinite(d)):
            raise ValueError(f"{sample['disparity'].name}: disparity contains NaN/inf")
        row["lr_consistency"] = float(np.mean(metrics.left_right_consistency(
            left, right, d)))
    if is_video and left.shape[0] >= 2:
        row["temporal_flicker"] = float(metrics.temporal_flicker(left[None], right[None])[0])
    if sample["gt"] is not None:
        gt, _ = _read(sample["gt"])
        if gt.shape != right.shape:
            raise ValueError(f"{sample['gt'].name}: shape {gt.shape} differs from the right "
                             f"view's {right.shape}")
        row["psnr"] = float(np.mean(metrics.psnr(right, gt)))
        if min(left.shape[1:3]) >= 11:
            row["ssim"] = float(np.mean(metrics.ssim(right, gt)))
        if use_lpips and min(left.shape[1:3]) >= 32:
            row["lpips"] = float(np.mean(metrics.lpips(right, gt)))
    if embed_fn is not None:
        row["clip_f"] = float(metrics.clip_f(embed_fn, left, right))
    return row


def _mean(rows, key):
    vals = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
    return sum(vals) / len(vals) if vals else None


def _finite(obj):
    """JSON-safe copy: non-finite floats (PSNR of identical views is inf) become strings."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def format_table(results: dict) -> str:
    cols = [c for c in COLUMNS if any(r[c] is not None for r in results["samples"].values())]
    names = list(results["samples"]) + ["mean"]
    width = max(len(n) for n in names + ["sample"])
    lines = ["  ".join(["sample".ljust(width)] + [c.rjust(18) for c in cols])]
    for name in names:
        r = results["mean"] if name == "mean" else results["samples"][name]
        cells = ["-" if r[c] is None else f"{r[c]:.4f}" for c in cols]
        lines.append("  ".join([name.ljust(width)] + [c.rjust(18) for c in cells]))
    return "\n".join(lines)


def evaluate(input_dir, output_dir=None, use_lpips=True, clip_checkpoint=None, max_shift=8):
    """Computes the metrics of every sample in ``input_dir``, writes ``metrics.json``
    (atomically) to ``output_dir`` (default input_dir); returns (results, json path)."""
    samples = discover(input_dir)
    out = common_flags.check_output_dir(output_dir or input_dir)
    embed_fn = clip_embedder(clip_checkpoint) if clip_checkpoint else None
    rows, used = {}, set()
    for s in samples:
        name = s["name"]
        while name in used:
            name += "'"
        used.add(name)
        rows[name] = evaluate_sample(s, use_lpips, embed_fn, max_shift)
    results = {"input_dir": str(Path(input_dir)), "samples": rows,
               "mean": {c: _mean(rows.values(), c) for c in COLUMNS},
               "files": {n: {k: (str(s[k].name) if s[k] else None)
                             for k in ("left", "right", "disparity", "gt")}
                         for n, s in zip(rows, samples)}}
    from szero_jax.io import atomic_output  # pylint: disable=import-outside-toplevel
    path = out / METRICS_FILE
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(_finite(results), indent=1, allow_nan=False, default=str))
    return results, path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.input_dir:
        raise app.UsageError("--input_dir is required")
    common_flags.enable_compilation_cache(FLAGS.compilation_cache_dir)
    results, path = evaluate(FLAGS.input_dir, FLAGS.output_dir, FLAGS.lpips,
                             FLAGS.clip_checkpoint, FLAGS.max_shift)
    print(format_table(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    common_flags.set_defaults(output_dir="")     # '': beside the inputs, in input_dir
    app.run(main)
