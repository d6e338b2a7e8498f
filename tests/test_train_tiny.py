"""experiments/train_tiny.py end to end at a toy size: fine-tuning from the shipped family."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from szero_jax import checkpoints, tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_depth_stage_fine_tunes_from_init_from(tmp_path):
    """Two steps of the depth stage from the shipped networks (--init_from) on 4 fresh 32x32
    clips: the saved UNet has the shipped shapes, moved by a small nonzero amount, and the
    report records the steps and a finite loss."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("vae", "image_encoder"):     # the frozen networks the depth stage loads
        shutil.copytree(checkpoints.TINY_DIR / name, out / name)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train_tiny", "--stage", "depth", "--steps", "2",
         "--num_clips", "4", "--latent_clips", "4", "--height", "32", "--width", "32",
         "--batch_size", "2", "--init_from", str(checkpoints.TINY_DIR),
         "--work_dir", str(tmp_path / "work"), "--output_dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped, _ = tiny.load_tiny_family(["depth_unet"])["depth_unet"]
    tuned, _ = checkpoints.load_params(out / "depth_unet", tiny.FAMILIES["depth_unet"])
    assert jax.tree.map(np.shape, tuned) == jax.tree.map(np.shape, shipped)
    delta = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(shipped)))
    assert 0.0 < delta < 0.05          # two AdamW steps in warmup: moved, but barely
    report = json.loads((tmp_path / "work" / "train_depth.json").read_text())
    assert report["steps"] == 2 and np.isfinite(report["final_loss"])
    assert (tmp_path / "work" / "clips_4_32x32x16.npz").is_file()
