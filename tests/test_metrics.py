"""metrics on numbers: PSNR of known noise, SSIM vs skimage, LPIPS, stereo consistency, block
matching on shifted textures."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from skimage.metrics import structural_similarity

from szero_jax.geometry import forward_warp
from szero_jax.metrics import (BlockMatchConfig, block_match_disparity, block_match_error, clip_f,
                               hole_ghost, left_right_consistency, lpips, met3r, psnr, ssim,
                               temporal_flicker, vertical_disparity)


def test_psnr_of_known_error():
    x = np.zeros((2, 8, 8, 3), np.float32)
    y = x + np.float32(0.1)  # MSE 0.01 -> 20 dB
    np.testing.assert_allclose(np.asarray(psnr(x, y)), [20.0, 20.0], atol=1e-4)
    np.testing.assert_allclose(float(psnr(x[0], y[0] * 2.55, data_range=255.0)[()]),
                               10 * math.log10(255.0 ** 2 / 0.255 ** 2), atol=1e-3)
    mask = np.zeros((2, 8, 8), bool)
    mask[:, :4] = True
    y[:, 4:] = 1.0  # outside the mask: ignored
    np.testing.assert_allclose(np.asarray(psnr(x, y, mask=mask)), [20.0, 20.0], atol=1e-4)
    rng = np.random.default_rng(0)
    noisy = x + rng.normal(0, 0.05, x.shape).astype(np.float32)
    assert abs(float(psnr(x, noisy).mean()) - 26.02) < 0.3  # sigma 0.05 -> 26.0 dB
    with pytest.raises(ValueError, match="share one shape"):
        psnr(x, y[:1])


@pytest.mark.parametrize("shape", [(1, 37, 53, 3), (2, 24, 24, 1)])
def test_ssim_matches_skimage(shape):
    rng = np.random.default_rng(1)
    a = skimage.data.astronaut()[: shape[1] * 4:4, : shape[2] * 4:4, : shape[3]] / 255.0
    a = np.broadcast_to(a, shape).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.08, shape), 0, 1).astype(np.float32)
    ours = np.asarray(ssim(a, b))
    for i in range(shape[0]):
        ref = structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=-1)
        assert abs(ours[i] - ref) < 1e-3
    np.testing.assert_allclose(np.asarray(ssim(a, a)), 1.0, atol=1e-5)


def test_lpips_loads_offline_and_orders_distortions():
    img = skimage.data.astronaut()[::8, ::8] / 255.0  # 64x64
    rng = np.random.default_rng(2)
    small = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    large = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1)
    d = np.asarray(lpips(np.stack([img, img, img]), np.stack([img, small, large])))
    assert d.shape == (3,) and abs(d[0]) < 1e-6 and 0 < d[1] < d[2]
    with pytest.raises(ValueError, match="RGB"):
        lpips(img[..., :1], img[..., :1])


def test_left_right_consistency_perfect_and_wrong_warp():
    left = skimage.data.astronaut()[::8, ::8][None] / 255.0
    yy, xx = np.mgrid[0:64, 0:64]
    disp = (4.0 + 6.0 * (xx > 32) * (yy > 20)).astype(np.float32)[None]  # a near box
    right, holes = forward_warp(jnp.asarray(left, jnp.float32), jnp.asarray(disp))
    good = float(left_right_consistency(left, right, disp)[0])
    wrong = float(left_right_consistency(left, right, np.full_like(disp, -3.0))[0])
    assert good < 1e-6 and wrong > 0.05
    with pytest.raises(ValueError, match="disparity must have shape"):
        left_right_consistency(left, right, disp[:, :10])


def test_hole_ghost_of_truth_duplicate_and_midway():
    rng = np.random.default_rng(0)
    left, true_right = rng.uniform(0, 1, (2, 2, 6, 9, 3)).astype(np.float32)
    mask = np.zeros((2, 6, 9), bool)
    mask[:, :, 3:5] = True
    assert hole_ghost(true_right, true_right, left, mask) == 0.0
    assert hole_ghost(left, true_right, left, mask) == 1.0          # the occluder's duplicate
    mid = 0.5 * (left + true_right)                                  # equally far from both
    assert abs(hole_ghost(mid, true_right, left, mask) - 0.5) < 1e-6
    wrong = true_right.copy()
    wrong[~mask] = left[~mask]                                       # only the mask counts
    assert hole_ghost(wrong, true_right, left, mask) == 0.0
    assert math.isnan(hole_ghost(left, true_right, left, np.zeros_like(mask)))
    with pytest.raises(ValueError, match="mask"):
        hole_ghost(left, true_right, left, mask[0])


def test_vertical_disparity():
    img = skimage.data.astronaut()[::4, ::4] / 255.0  # 128x128
    left, right, _ = skimage.data.stereo_motorcycle()
    pair = np.stack([left[::4, ::4], right[::4, ::4]]) / 255.0
    shifts = np.asarray(vertical_disparity(pair[:1], pair[1:]))
    assert abs(shifts[0]) < 0.5  # rectified Middlebury pair: no vertical offset
    down = np.roll(img, 3, axis=0)  # right[y] = left[y - 3]
    up = np.roll(np.roll(img, -2, axis=0), 5, axis=1)  # plus a horizontal shift
    est = np.asarray(vertical_disparity(np.stack([img, img]), np.stack([down, up])))
    np.testing.assert_allclose(est, [3.0, -2.0], atol=0.3)


def test_temporal_flicker():
    rng = np.random.default_rng(3)
    left = np.cumsum(rng.normal(0, 0.01, (1, 6, 8, 8, 3)), axis=1).astype(np.float32) + 0.5
    np.testing.assert_allclose(np.asarray(temporal_flicker(left, left)), [1.0], atol=1e-6)
    noisy = left + rng.normal(0, 0.05, left.shape).astype(np.float32)
    assert float(temporal_flicker(left, noisy)[0]) > 10.0
    with pytest.raises(ValueError, match="T >= 2"):
        temporal_flicker(left[:, :1], left[:, :1])


def test_clip_f_with_any_embedder():
    embed = lambda frames: frames.reshape(frames.shape[0], -1)  # pixels as embeddings
    rng = np.random.default_rng(4)
    a = rng.random((2, 3, 4, 4, 3)).astype(np.float32)
    assert abs(float(clip_f(embed, a, a)) - 100.0) < 1e-4
    assert abs(float(clip_f(embed, a, -a)) + 100.0) < 1e-4  # opposite embeddings
    orth = np.zeros_like(a)
    orth[..., 0, 0, 0], a2 = 1.0, a.copy()
    a2[..., 0, 0, 0] = 0.0
    assert abs(float(clip_f(embed, a2, orth))) < 1e-5  # orthogonal embeddings
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        clip_f(lambda f: f, a, a)


def test_met3r_adapter_needs_optional_package():
    pytest.importorskip("torch")
    try:
        import met3r as _  # noqa: F401
        pytest.skip("met3r is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="optional `met3r` package"):
        met3r(np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 32, 3)))


def _texture(h=80, w=128, seed=0):
    """Smoothed colour noise in [0, 1] (no period: an unambiguous texture)."""
    from scipy.ndimage import gaussian_filter
    t = gaussian_filter(np.random.RandomState(seed).rand(h, w, 3), (1.0, 1.0, 0))
    return ((t - t.min()) / np.ptp(t)).astype(np.float32)


def _shift(img, d):
    """right(x) = img(x + d) by linear interpolation (right(x - d) = img(x))."""
    xs = np.arange(img.shape[1]) + d
    return np.stack([np.stack([np.interp(xs, np.arange(img.shape[1]), row[:, c])
                               for c in range(img.shape[2])], -1) for row in img])


@pytest.mark.parametrize("d, tol", [(0.0, 0.03), (3.0, 0.04), (7.0, 0.04), (4.5, 0.03),
                                    (-2.0, 0.04)])
def test_block_match_recovers_a_constant_shift(d, tol):
    left = _texture()
    right = _shift(left, d).astype(np.float32)
    est = block_match_disparity(left, right, 12, -4)
    conf = np.asarray(est.confident)
    e = np.asarray(est.disparity)[conf]
    # Measured: confident 0.95-1.0 (the rest: the strip that leaves the frame), mean error
    # 0.024 / 0.029 / 0.028 / 0.020 / 0.029 px (the parabola's bias on a texture smoothed at
    # sigma 1), mean bias < 0.007 px; the half-pixel shift recovered to <= 0.5 px everywhere.
    assert conf.mean() > 0.9
    assert abs(e.mean() - d) < 0.01 and np.abs(e - d).mean() < tol
    assert np.abs(e - d).max() <= 1.0
    if d == 4.5:
        assert np.abs(e - d).max() <= 0.5


def test_block_match_error_of_a_near_box_and_its_control():
    """A near box (9 px) over a background (3 px), forward-warped, holes grey: the estimate
    follows the intended map (error 0.13 px, 98.5 % within 1 px; edge fattening is the
    rest); the zero-disparity control (right = left) estimates 0, so its error is the
    intended disparity's mean over the scored pixels (4.23 px)."""
    left = _texture()
    d = np.full(left.shape[:2], 3.0, np.float32)
    d[20:60, 40:90] = 9.0
    warped, holes = forward_warp(jnp.asarray(left)[None], jnp.asarray(d)[None])
    right = np.where(np.asarray(holes[0])[..., None], 0.5, np.asarray(warped[0]))
    both = block_match_error(np.stack([left, left]), np.stack([right, left]),
                             np.stack([d, d]))
    assert both.mean_abs_error_px.shape == (2,)
    res, ctrl = (type(both)(*(float(v[i]) for v in both)) for i in range(2))
    assert res.mean_abs_error_px < 0.2 and res.median_abs_error_px < 0.05
    assert res.within_1px > 0.97 and res.confident_fraction > 0.97
    assert res.scored_fraction == pytest.approx(ctrl.scored_fraction)
    assert 0.9 < res.scored_fraction < 1.0            # the occluded / out-of-frame strips
    scored_mean = (3.0 * (1 - 40 * 50 / 9600) + 9.0 * 40 * 50 / 9600)  # ~ over the scored set
    assert ctrl.mean_abs_error_px == pytest.approx(scored_mean, abs=0.3)
    assert ctrl.within_1px == 0.0 and ctrl.confident_fraction > 0.99
    # The left-right check rejects the occluded background next to the box's left edge
    # (those left pixels have no match in the right view).
    est = block_match_disparity(left, right, 11, 0)
    occluded = np.zeros(d.shape, bool)
    occluded[24:56, 34:38] = True   # background the box covers in the right view (inner rows)
    assert np.asarray(est.confident)[occluded].mean() < 0.5


def test_block_match_untextured_and_bad_input():
    flat = np.full((40, 64, 3), 0.4, np.float32)
    est = block_match_disparity(flat, flat, 5)
    assert est.disparity.shape == (40, 64)
    assert not np.asarray(est.textured).any() and not np.asarray(est.confident).any()
    with pytest.raises(ValueError, match="left and right"):
        block_match_disparity(flat, flat[:, :32], 5)
    with pytest.raises(ValueError, match="min <= max"):
        block_match_disparity(flat, flat, 2, 5)
    with pytest.raises(ValueError, match="less than|< the width"):
        block_match_disparity(flat, flat, 64)
    with pytest.raises(ValueError, match="block: expected an odd int"):
        block_match_disparity(flat, flat, 5, config=BlockMatchConfig(block=6))
    with pytest.raises(ValueError, match="disparity: expected finite"):
        block_match_error(flat, flat, np.full((40, 64), np.nan))
