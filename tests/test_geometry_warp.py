"""forward_warp / backward_warp / occlusion_mask against naive loops and Middlebury."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from szero_jax.geometry import backward_warp, forward_warp, occlusion_mask


def naive_forward_warp(x, d):
    """Per-pixel z-buffer keyed on disparity (nearest wins, ties -> larger column), float32."""
    x, d = np.asarray(x), np.asarray(d, np.float32)
    *lead, w, c = x.shape
    out = np.zeros_like(x)
    holes = np.ones(d.shape, bool)
    xs, ds = x.reshape(-1, w, c), d.reshape(-1, w)
    outs, hs = out.reshape(-1, w, c), holes.reshape(-1, w)
    for n in range(ds.shape[0]):
        best = {}
        for col in range(w):
            t = np.floor(np.float32(col) - ds[n, col] + np.float32(0.5))
            if not np.isfinite(t) or t < 0 or t >= w:
                continue
            t = int(t)
            key = (ds[n, col], col)
            if t not in best or key > best[t]:
                best[t] = key
        for t, (_, col) in best.items():
            outs[n, t] = xs[n, col]
            hs[n, t] = False
    return outs.reshape(x.shape), hs.reshape(d.shape)


def random_case(rng, shape, spread=6.0):
    """Many collisions: large disparity gradients, integer ties, out-of-frame and NaN sources."""
    d = rng.normal(0.0, spread, shape[:-1]).astype(np.float32)
    d[rng.random(d.shape) < 0.3] = 3.0  # integer-valued plateaus
    d.flat[rng.choice(d.size, 5, replace=False)] = rng.choice([-40.0, 40.0, 30.5], 5)
    d.flat[rng.choice(d.size, 2, replace=False)] = np.nan
    return rng.normal(size=shape).astype(np.float32), d


@pytest.mark.parametrize("shape", [(2, 3, 5, 24, 3), (3, 6, 17, 2)])
def test_forward_warp_equals_naive_loop(shape):
    rng = np.random.default_rng(0)
    x, d = random_case(rng, shape)
    warped, holes = jax.jit(forward_warp)(jnp.asarray(x), jnp.asarray(d))
    ref_w, ref_h = naive_forward_warp(x, d)
    assert holes.dtype == jnp.bool_ and holes.shape == d.shape
    np.testing.assert_array_equal(np.asarray(holes), ref_h)
    np.testing.assert_array_equal(np.asarray(warped), ref_w)
    # The case is hard: many sources collide and many targets are empty.
    landed = np.isfinite(d) & (np.abs(d) < shape[-2])
    assert ref_h.mean() > 0.2 and (landed.sum() - (~ref_h).sum()) > 0.2 * d.size


def test_forward_warp_integer_shift_and_negative_disparity():
    x = jnp.arange(8, dtype=jnp.float32).reshape(1, 1, 8, 1) + 1
    warp = jax.jit(forward_warp)
    w, h = warp(x, jnp.full((1, 1, 8), 2.0))
    np.testing.assert_array_equal(np.asarray(w)[0, 0, :, 0], [3, 4, 5, 6, 7, 8, 0, 0])
    np.testing.assert_array_equal(np.asarray(h)[0, 0], [0] * 6 + [1, 1])
    w, h = warp(x, jnp.full((1, 1, 8), -2.5))  # -2.5 -> c + 3 (floor(c + 3.0))
    np.testing.assert_array_equal(np.asarray(w)[0, 0, :, 0], [0, 0, 0, 1, 2, 3, 4, 5])
    w_np, _ = forward_warp(np.asarray(x), np.full((1, 1, 8), -2.5))  # NumPy inputs too
    np.testing.assert_array_equal(np.asarray(w_np), np.asarray(w))


def test_forward_warp_vmapped_equals_per_item():
    rng = np.random.default_rng(1)
    x, d = random_case(rng, (2, 3, 6, 20, 2))
    warp = jax.jit(forward_warp)
    batched = warp(jnp.asarray(x), jnp.asarray(d))
    per_item = jax.jit(jax.vmap(lambda a, b: forward_warp(a[None], b[None])))(x, d)
    for i in range(2):
        single = warp(jnp.asarray(x[i:i + 1]), jnp.asarray(d[i:i + 1]))
        np.testing.assert_array_equal(np.asarray(batched[0][i]), np.asarray(single[0][0]))
        np.testing.assert_array_equal(np.asarray(batched[1][i]), np.asarray(single[1][0]))
    np.testing.assert_array_equal(np.asarray(batched[0]), np.asarray(per_item[0])[:, 0])


def test_forward_warp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="disparity must have shape"):
        forward_warp(jnp.zeros((1, 4, 5, 3)), jnp.zeros((1, 4, 6)))
    with pytest.raises(ValueError, match="x must be"):
        forward_warp(jnp.zeros((4, 5, 3)), jnp.zeros((4, 5)))


@pytest.fixture(scope="module")
def motorcycle():
    left, right, disp = skimage.data.stereo_motorcycle()  # disp: left view's, inf = unknown
    return left[None] / 255.0, right[None] / 255.0, disp[None]


def psnr_on(a, b, mask):
    return 10 * math.log10(1.0 / float(np.mean((np.asarray(a) - b)[mask] ** 2)))


def test_middlebury_forward_warp_matches_right_view(motorcycle):
    left, right, disp = motorcycle
    warped, holes = jax.jit(forward_warp)(jnp.asarray(left, jnp.float32), jnp.asarray(disp))
    good = ~np.asarray(holes)
    assert 0.1 < 1 - good.mean() < 0.25  # unknown GT + disocclusions + right border
    assert psnr_on(warped, right, good) >= 25.0  # measured 26.9 dB
    # The convention matters: the opposite sign is far worse.
    flipped, fh = jax.jit(forward_warp)(jnp.asarray(left, jnp.float32), jnp.asarray(-disp))
    assert psnr_on(flipped, right, ~np.asarray(fh)) < 15.0


def test_middlebury_backward_warp_and_occlusions(motorcycle):
    left, right, disp = motorcycle
    est, valid = jax.jit(backward_warp)(jnp.asarray(right, jnp.float32), jnp.asarray(disp))
    occluded = np.asarray(jax.jit(occlusion_mask)(jnp.asarray(disp)))
    good = np.asarray(valid) & ~occluded
    assert psnr_on(est, left, good) >= 25.0  # measured 27.6 dB


def test_occlusion_mask_equals_naive():
    rng = np.random.default_rng(2)
    _, d = random_case(rng, (2, 5, 24, 1))
    occ = np.asarray(jax.jit(occlusion_mask)(jnp.asarray(d)))
    cols = np.broadcast_to(np.arange(24, dtype=np.float32), d.shape)[..., None]
    won, holes = naive_forward_warp(cols, d)
    # A source is visible iff it lands in frame and is the winner at its target.
    t = np.floor(np.arange(24, dtype=np.float32) - d + np.float32(0.5))
    inside = np.isfinite(t) & (t >= 0) & (t < 24)
    ti = np.where(inside, t, 0).astype(int)
    winner = np.take_along_axis(np.where(holes, -1, won[..., 0]), ti, axis=-1)
    visible = inside & (winner == np.arange(24))
    np.testing.assert_array_equal(occ, ~visible)
    assert 0.1 < occ.mean() < 0.9


def test_backward_warp_linear_and_nearest():
    row = jnp.arange(6, dtype=jnp.float32).reshape(1, 1, 6, 1) * 10
    d = jnp.asarray([[[1.5, 1.5, 1.5, -0.25, 0.0, 0.0]]])
    out, valid = backward_warp(row, d)
    np.testing.assert_allclose(np.asarray(out)[0, 0, :, 0], [0, 0, 5, 32.5, 40, 50])
    np.testing.assert_array_equal(np.asarray(valid)[0, 0], [0, 0, 1, 1, 1, 1])
    out, valid = backward_warp(row, d, mode="nearest")
    np.testing.assert_allclose(np.asarray(out)[0, 0, :, 0], [0, 0, 10, 30, 40, 50])
    with pytest.raises(ValueError, match="mode"):
        backward_warp(row, d, mode="cubic")


def test_background_fill_takes_the_far_side_and_batches():
    """A near block (d 3) on a far plane (d 1): the disocclusion right of the block takes the
    far plane's pixel beyond it, not the block's; the frame edge its only neighbour."""
    from szero_jax.geometry import background_fill, warped_disparity
    w = 12
    d = np.ones((2, 3, w), np.float32)
    d[:, :, 4:7] = 3.0
    x = np.broadcast_to(np.arange(w, dtype=np.float32)[:, None], (2, 3, w, 2)).copy()
    warped, holes = forward_warp(x, d)
    wd = warped_disparity(d)
    np.testing.assert_array_equal(np.asarray(wd)[np.asarray(holes)], 0.0)
    out = np.asarray(background_fill(warped, holes, wd))
    h, row, wrow = np.asarray(holes)[0, 0], np.asarray(warped)[0, 0, :, 0], np.asarray(wd)[0, 0]
    for c in np.flatnonzero(h):
        lc = max((i for i in range(c) if not h[i]), default=None)
        rc = min((i for i in range(c + 1, w) if not h[i]), default=None)
        want = min([i for i in (lc, rc) if i is not None], key=lambda i: (wrow[i], i != lc))
        assert out[0, 0, c, 0] == row[want]
        assert wrow[want] == 1.0                     # always the far plane here
    np.testing.assert_array_equal(out[~np.asarray(holes)], np.asarray(warped)[~np.asarray(holes)])
    np.testing.assert_array_equal(out, np.broadcast_to(out[:1, :1], out.shape))  # rows alike
    empty = background_fill(jnp.ones((1, w, 1)), jnp.ones((1, w), bool), jnp.zeros((1, w)))
    np.testing.assert_array_equal(np.asarray(empty), 0.0)   # a row with no pixel: zeros
