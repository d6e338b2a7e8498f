"""disparity_from_depth, resize_disparity, border_mask, dilate_holes on numbers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from szero_jax.geometry import (border_mask, dilate_holes, disparity_from_depth, forward_warp,
                                resize_disparity)


def test_disparity_from_depth_range_and_order():
    depth = np.linspace(1.0, 10.0, 2 * 8 * 16).reshape(1, 2, 8, 16).astype(np.float32)
    d = np.asarray(disparity_from_depth(depth, 0.08, percentiles=(0, 100)))
    assert d.shape == depth.shape
    np.testing.assert_allclose([d.min(), d.max()], [0.0, 0.08 * 16], atol=1e-5)
    assert d.flat[0] == d.max() and d.flat[-1] == d.min()  # nearest (depth 1) shifts most
    # Disparity input is used as is (larger = nearer), and its normalisation is per clip.
    disp = np.stack([depth[0], 5 * depth[0] + 3])
    out = np.asarray(disparity_from_depth(disp, 0.04, kind="disparity", percentiles=(0, 100)))
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    np.testing.assert_allclose(out[0].max(), 0.04 * 16, atol=1e-5)


def test_disparity_from_depth_convergence_and_robustness():
    rng = np.random.default_rng(0)
    disp = rng.random((1, 32, 32)).astype(np.float32)
    disp[0, 0, 0] = 1000.0  # one outlier must not squash the rest
    d = np.asarray(disparity_from_depth(disp, 0.1, kind="disparity", convergence=0.5,
                                        width=64))
    np.testing.assert_allclose([d.min(), d.max()], [-3.2, 3.2], atol=1e-4)
    assert np.median(np.abs(d)) > 1.0
    flat = np.asarray(disparity_from_depth(np.ones((1, 4, 4)), 0.1))
    np.testing.assert_array_equal(flat, 0.0)


@pytest.mark.parametrize("bad, match", [
    (np.array([[[1.0, np.nan]]]), "NaN/inf"),
    (np.array([[[1.0, np.inf]]]), "NaN/inf"),
    (np.array([[[1.0, 0.0]]]), "> 0"),
    (np.ones((4, 4)), r"\[B, T, H, W\]"),
])
def test_disparity_from_depth_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        disparity_from_depth(bad, 0.08)


def test_disparity_from_depth_rejects_percent_and_kind():
    with pytest.raises(ValueError, match="max_disparity"):
        disparity_from_depth(np.ones((1, 2, 2)), 8)
    with pytest.raises(ValueError, match="kind"):
        disparity_from_depth(np.ones((1, 2, 2)), 0.08, kind="inverse")


def test_resize_disparity_matches_torch_bilinear_and_scales_values():
    rng = np.random.default_rng(0)
    disp = rng.random((2, 3, 64, 96)).astype(np.float32) * 20
    ours = np.asarray(resize_disparity(jnp.asarray(disp), (8, 12)))
    ref = F.interpolate(torch.from_numpy(disp), size=(8, 12), mode="bilinear",
                        align_corners=False).numpy() * (12 / 96)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    up = np.asarray(resize_disparity(jnp.full((1, 4, 4), 2.0), (8, 8)))
    np.testing.assert_allclose(up, 4.0)


def test_border_mask_matches_released_rule():
    # T=3, H=4, W=10. Columns 7, 8, 9 have a hole in some frame in every row: a run of 3 from
    # the right edge. Column 2 is blank too but not connected to an edge.
    holes = np.zeros((1, 3, 4, 10), bool)
    holes[0, 0, :, 8:] = True
    holes[0, 1, :, 7] = True
    holes[0, 2, :2, 2] = True
    holes[0, 1, 2:, 2] = True
    holes[0, :, 1:, 0] = True  # left column: row 0 valid in all frames -> not blank
    m = np.asarray(border_mask(jnp.asarray(holes)))
    assert m.shape == holes.shape
    np.testing.assert_array_equal(m[0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    assert m.all(axis=(1, 2)).sum() == 3 and (m == m[:, :1, :1]).all()
    # Column 0, row 0 is valid in all 3 frames, so the left edge is not blank.
    m3 = np.asarray(border_mask(jnp.asarray(holes), min_valid_frames=3, side="left"))
    assert not m3.any()
    m_img = np.asarray(border_mask(jnp.asarray(holes[:, 0])))  # [B, H, W] image form
    np.testing.assert_array_equal(m_img[0, 0], [0] * 8 + [1, 1])


def test_border_mask_of_a_warp():
    x = jnp.ones((1, 2, 6, 20, 1))
    warp = jax.jit(forward_warp)
    _, holes = warp(x, jnp.full((1, 2, 6, 20), 3.0))
    m = np.asarray(border_mask(holes))
    np.testing.assert_array_equal(m[0, 0, 0], [0] * 17 + [1] * 3)
    _, holes = warp(x, jnp.full((1, 2, 6, 20), -2.0))
    np.testing.assert_array_equal(np.asarray(border_mask(holes))[0, 1, 5], [1] * 2 + [0] * 18)


def test_dilate_holes():
    holes = np.zeros((1, 1, 7, 9), bool)
    holes[0, 0, 3, 4] = True
    out = np.asarray(dilate_holes(jnp.asarray(holes), 2))
    assert out.sum() == 25 and out[0, 0, 1:6, 2:7].all()
    np.testing.assert_array_equal(np.asarray(dilate_holes(jnp.asarray(holes), 0)), holes)
    with pytest.raises(ValueError, match="radius"):
        dilate_holes(jnp.asarray(holes), -1)
