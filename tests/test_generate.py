"""The generate / generate_image launchers in subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from szero_jax import io
from szero_jax.io import read_video, write_image
from tests.helpers.tiny_models import FRAMES, SIZE, save_video_bundle, video_models

ROOT = Path(__file__).resolve().parents[1]


def _run(module, *args, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module, expected", [
    ("generate", {"--checkpoint": "'tiny'", "--output_dir": "'out/demo'", "--seed": "'0'",
                  "--format": "'sbs'", "--dtype": "'float32'", "--steps": "'50'",
                  "--eta": "'1.0'",
                  "--dissolve_step": "'20'"}),
    ("generate_image", {"--mode": "'text'", "--steps": "'50'", "--format": "'sbs'",
                        "--attention": "'uni'", "--random_weights_for_testing": "'false'"}),
])
def test_help_lists_flags_with_defaults(module, expected):
    out = _run(module, "--help")      # absl exits with status 1 after printing the help
    text = out.stdout + out.stderr
    for flag, default in expected.items():
        i = max(text.find(f"  {flag}:"), text.find(f"  --[no]{flag[2:]}:"))
        assert f"(default: {default})" in text[i:i + 600], flag
    assert "--compilation_cache_dir" in text
    if module == "generate":   # default None: the checkpoint's guidance, stated in the help
        i = text.find("  --guidance:")
        block = " ".join(text[i:i + 300].split())
        assert "7.5 DynamiCrafter" in block and "1.0 the tiny" in block
        i = text.find("  --max_disparity:")
        assert "0.08 =" in text[i:i + 300] and "0.16 for" in text[i:i + 300]


def test_generate_image_depth_mode_on_the_tiny_sd_fails_clearly(tmp_path):
    """Without --checkpoint the tiny SD is loaded; it has no depth UNet (4 input channels),
    so depth mode stops before sampling, naming what it needs, and writes nothing."""
    out = _run("generate_image", "--mode", "depth", "--output_dir", str(tmp_path / "o"))
    assert out.returncode != 0
    assert "needs an SD 2 depth UNet (5 input channels)" in out.stderr
    assert not any((tmp_path / "o").glob("*.png"))


@pytest.mark.slow
def test_generate_writes_videos_and_summary(tmp_path):
    ckpt = save_video_bundle(video_models(), tmp_path / "ckpt")
    image = np.random.RandomState(1).rand(SIZE, SIZE, 3).astype(np.float32)
    write_image(tmp_path / "in.png", image)
    out_dir = tmp_path / "out"
    out = _run("generate", "--checkpoint", str(ckpt), "--image", str(tmp_path / "in.png"),
               "--prompt", "a small red square", "--output_dir", str(out_dir), "--steps", "4",
               "--restart_steps", "1", "--restart_rounds", "2", "--refine_rounds", "1",
               "--warp_every", "2", "--format", "all", "--depth_steps", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[stereo] start" in out.stdout and "[left] 4/4" in out.stdout
    wide = {"sbs": (SIZE, 2 * SIZE), "half-sbs": (SIZE, SIZE), "tb": (2 * SIZE, SIZE),
            "anaglyph": (SIZE, SIZE), "left": (SIZE, SIZE), "right": (SIZE, SIZE),
            "depth": (SIZE, SIZE)}
    for name, hw in wide.items():
        file = out_dir / ("depth.mp4" if name == "depth" else io.output_name(name, ".mp4"))
        assert f"wrote {file}" in out.stdout
        frames, fps = read_video(file)
        assert frames.shape == (FRAMES,) + hw + (3,) and fps == 8.0, name
    s = json.loads((out_dir / "summary.json").read_text())
    m = s["metrics"]
    assert s["frames"] == FRAMES and s["settings"]["sampling"]["steps"] == 4
    assert set(s["timings_s"]) >= {"load_models", "left", "depth", "stereo", "decode", "total_wall"}
    assert 0.0 <= m["hole_fraction"] < 1.0 and m["left_right_consistency"] >= 0.0
    assert m["temporal_flicker_right_vs_left"] > 0.0
    assert m["disparity_px"]["max"] == pytest.approx(0.08 * SIZE, rel=1e-4)
    assert not list(out_dir.glob(".partial-*"))


@pytest.mark.slow
def test_generate_image_random_weights(tmp_path):
    np.save(tmp_path / "d.npy", np.linspace(1, 2, 64 * 64, dtype=np.float32).reshape(64, 64))
    out = _run("generate_image", "--random_weights_for_testing", "--prompt", "a red cube",
               "--depth", str(tmp_path / "d.npy"), "--steps", "3", "--output_dir",
               str(tmp_path / "o"), "--format", "tb")
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["random_weights_for_testing"] and s["metrics"]["hole_fraction"] >= 0.0
    for name in ("left.png", "right.png", "sbs_LRF_Full_SBS.png", "anaglyph_redcyan.png",
                 "tb_TBF_fulltb.png", "disparity.png", "report.html"):
        assert (tmp_path / "o" / name).is_file()
