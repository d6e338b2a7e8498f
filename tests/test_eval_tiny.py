"""experiments/eval_tiny.py: its measures (fast) and the whole held-out evaluation of the
shipped family at its size on two clips (slow)."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from szero_jax import checkpoints, tiny


def test_psnr_and_aligned_errors():
    from experiments.eval_tiny import aligned_errors, psnr
    b = np.zeros((2, 4, 4, 3))
    np.testing.assert_allclose(psnr(b + 0.1, b), 10 * np.log10(4 / 0.01), rtol=1e-9)
    assert psnr(b + 5.0, b)[0] == pytest.approx(10 * np.log10(4.0))    # clipped to [-1, 1]
    gt = np.random.default_rng(0).uniform(0.5, 2.0, (3, 5, 6))
    abs_rel, delta1, rel_disp = aligned_errors(3.0 * gt - 1.0, gt)     # any scale and shift
    assert abs_rel == pytest.approx(0.0, abs=1e-9) and delta1 == 1.0
    assert rel_disp == pytest.approx(0.0, abs=1e-9)
    const = aligned_errors(np.zeros_like(gt), gt)                      # fit = the mean
    np.testing.assert_allclose(const[2], np.mean(np.abs(gt.mean() - gt) / gt), rtol=1e-9)


def test_vae_roundtrip_matches_the_vae():
    """eval_vae's round trip (stages.encode, unclipped decode) = the VAE's own encode /
    decode of each frame; its PSNR is the one reported."""
    from experiments.eval_tiny import HeldOut, eval_vae, psnr, roundtrip
    from szero_jax.models.vae import AutoencoderKL
    from szero_jax.pipelines.bundles import load_video_models
    models = load_video_models()
    clips = HeldOut.render(1, 32, 48, 2)
    rec = roundtrip(models, clips.video01)
    params, cfg = tiny.load_tiny_family(["vae"])["vae"]
    vae = AutoencoderKL(cfg)
    flat = clips.video01.reshape(-1, 32, 48, 3) * 2 - 1
    want = vae.apply(params, vae.apply(params, flat, method="encode")[0], method="decode")
    np.testing.assert_allclose(rec.reshape(want.shape), np.asarray(want), atol=1e-4)
    m, disparity = eval_vae(models, clips)
    assert m["vae_psnr_frames_db"] == pytest.approx(float(np.mean(psnr(rec, flat[None]))), abs=1e-4)
    assert disparity.shape == (1, 2, 32, 48) and np.abs(disparity).max() < 1.5


@pytest.mark.slow
def test_run_on_two_heldout_clips(tmp_path):
    """The eval stage on two held-out clips at the family's size: every network measured,
    the learnt ones well ahead of their trivial baselines, the grid written."""
    from experiments import eval_tiny
    fam = tmp_path / "tiny"
    shutil.copytree(checkpoints.TINY_DIR, fam, ignore=shutil.ignore_patterns("metrics.json"))
    m = eval_tiny.run(str(fam), 2, tiny.HEIGHT, tiny.WIDTH, tiny.FRAMES, str(tmp_path / "docs"))
    assert json.loads((fam / "metrics.json").read_text()) == json.loads(json.dumps(m))
    assert m["heldout_seeds"] == [1_000_000, 1_000_001]
    assert m["vae_psnr_frames_db"] > 15 and m["vae_psnr_disparity_db"] > 20
    assert m["clip_top1_chance"] == 0.5
    v = m["video_v_loss"]          # measured on 3 clips: 0.045 vs 0.95
    assert v["conditioned"]["mean"] < 0.2 * v["zero_predictor"]["mean"]
    d = m["depth"]                 # measured on 3 clips: 0.56 / 0.50 (dissolve 40) vs 0.78
    assert d["sampled"]["abs_rel_disparity"] < d["constant"]["abs_rel_disparity"]
    assert d["vae_roundtrip_of_gt"]["abs_rel_disparity"] < 0.2
    grid = np.asarray(Image.open(tmp_path / "docs" / "tiny_samples.png"))
    assert grid.shape == (2 * 2 * tiny.HEIGHT * 2, tiny.FRAMES * tiny.WIDTH * 2, 3)
    assert m["samples"]["cfg"] == 1.0 and m["samples"]["ddim_steps"] == 25
    with pytest.raises(ValueError, match="^frames:"):
        eval_tiny.run(str(fam), 1, 32, 32, tiny.FRAMES + 1, str(tmp_path / "docs"))
