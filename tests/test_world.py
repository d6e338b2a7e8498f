"""The procedural stereo world: determinism, ranges, stereo ground truth, captions, variety."""
import colorsys
import json

import numpy as np
import pytest

from szero_jax import world


def reference_warp(x, d):
    """NumPy statement of the forward-warp contract: source column c lands on floor(c - d + 0.5)
    of its row; the largest disparity wins, ties -> larger source column. x [..., W, C]."""
    width, channels = d.shape[-1], x.shape[-1]
    rows = d.reshape(-1, width).shape[0]
    row = np.repeat(np.arange(rows), width)
    col = np.tile(np.arange(width), rows)
    disp = d.reshape(-1).astype(np.float64)
    target = np.floor(col - disp + 0.5).astype(np.int64)
    keep = (target >= 0) & (target < width)
    row, col, disp, target = row[keep], col[keep], disp[keep], target[keep]
    order = np.lexsort((col, disp, target, row))  # the winner sorts last in its (row, target)
    row, col, target = row[order], col[order], target[order]
    last = np.ones(len(row), bool)
    last[:-1] = (row[1:] != row[:-1]) | (target[1:] != target[:-1])
    out = np.zeros((rows, width, channels), x.dtype)
    holes = np.ones((rows, width), bool)
    out[row[last], target[last]] = x.reshape(rows, width, channels)[row[last], col[last]]
    holes[row[last], target[last]] = False
    return out.reshape(x.shape), holes.reshape(d.shape)


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


@pytest.fixture(scope="module")
def integer_scenes():
    return [world.make_scene(s, 40, 56, 5, max_disparity=6.0, integer_disparity=True)
            for s in range(24)]


def test_deterministic_per_seed_and_prefix_consistent():
    a = world.make_scene(11, 32, 40, 6)
    b = world.make_scene(11, 32, 40, 6)
    c = world.make_scene(12, 32, 40, 6)
    for name in ("left", "right", "depth", "disparity", "occluded", "disoccluded", "left_labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.caption == b.caption and a.metadata == b.metadata
    assert np.abs(a.left - c.left).mean() > 0.02 and a.caption != c.caption
    # a shorter clip of the same seed is the start of the longer one
    short = world.make_scene(11, 32, 40, 3)
    np.testing.assert_array_equal(short.right, a.right[:3])


def test_shapes_dtypes_ranges_and_depth_disparity_relation():
    for seed in (0, 5, world.HELDOUT_SEED_START):
        s = world.make_scene(seed, 24, 36, 4, max_disparity=3.5)
        for name in ("left", "right"):
            v = getattr(s, name)
            assert v.shape == (4, 24, 36, 3) and v.dtype == np.float32
            assert v.min() >= 0.0 and v.max() <= 1.0
        for name in ("depth", "disparity", "right_depth", "right_disparity"):
            v = getattr(s, name)
            assert v.shape == (4, 24, 36) and v.dtype == np.float32 and np.all(np.isfinite(v))
            assert v.min() > 0
        assert s.disparity.max() <= 3.5 + 1e-5
        fb = s.metadata["focal_px"] * s.metadata["baseline"]
        np.testing.assert_allclose(s.depth * s.disparity, fb, rtol=1e-5)
        np.testing.assert_allclose(s.right_depth * s.right_disparity, fb, rtol=1e-5)
        assert s.occluded.dtype == bool and s.disoccluded.dtype == bool
        assert s.left_labels.max() <= len(s.metadata["objects"])
        # the background is the farthest layer: object pixels have larger disparity
        bg = s.left_labels == 0
        if (~bg).any():
            assert s.disparity[~bg].min() >= s.disparity[bg].max() - 1e-6


def test_integer_disparity_warp_reproduces_right_view_exactly(integer_scenes):
    hole_total = disoccluded_total = 0
    for s in integer_scenes:
        np.testing.assert_array_equal(s.disparity, np.round(s.disparity))
        warped, holes = reference_warp(s.left, s.disparity)
        both = ~s.disoccluded  # right pixels the left camera also sees
        assert both.mean() > 0.7
        np.testing.assert_array_equal(warped[both], s.right[both])
        # every hole of the warp is a true disocclusion ...
        assert not np.any(holes & both)
        hole_total += holes.sum()
        disoccluded_total += s.disoccluded.sum()
        # background disparity >= 1 everywhere, so the right view's last column is unseen
        assert s.disoccluded[..., -1].all() and holes[..., -1].all()
    # disocclusions the z-buffer cannot detect (a farther pixel lands there) are rare
    assert hole_total >= 0.99 * disoccluded_total


def test_warp_discards_only_occluded_left_pixels(integer_scenes):
    for s in integer_scenes[:8]:
        t, h, w = s.disparity.shape
        ids = np.arange(t * h * w, dtype=np.int64).reshape(t, h, w, 1)
        warped, holes = reference_warp(ids, s.disparity)
        won = np.zeros(t * h * w, bool)
        won[warped[~holes].ravel()] = True
        # a left pixel that reaches the right view without being occluded always wins
        assert not np.any(~won.reshape(t, h, w) & ~s.occluded)
        assert s.occluded.mean() > 0


@pytest.mark.slow
def test_integer_disparity_exact_at_full_size():
    s = world.make_scene(world.HELDOUT_SEED_START + 7, 320, 512, 8, max_disparity=32.0,
                         integer_disparity=True)
    warped, holes = reference_warp(s.left, s.disparity)
    both = ~s.disoccluded
    np.testing.assert_array_equal(warped[both], s.right[both])
    assert not np.any(holes & both) and s.disparity.max() >= 16


def test_geometry_forward_warp_agrees(integer_scenes):
    geometry = pytest.importorskip("szero_jax.geometry")
    s = integer_scenes[3]
    warped, holes = geometry.forward_warp(s.left[None], s.disparity[None])
    both = ~s.disoccluded
    np.testing.assert_array_equal(np.asarray(warped[0])[both], s.right[both])
    assert not np.any(np.asarray(holes[0]) & both)


def test_fractional_disparity_warp_psnr():
    errors, holes_outside = [], 0
    for seed in range(12):
        s = world.make_scene(seed, 48, 64, 6, max_disparity=6.0)
        assert np.any(s.disparity != np.round(s.disparity))
        warped, holes = reference_warp(s.left, s.disparity)
        valid = ~s.disoccluded & ~holes
        errors.append((warped[valid] - s.right[valid]) ** 2)
        holes_outside += np.sum(holes & ~s.disoccluded)
    pooled = 10 * np.log10(1.0 / np.concatenate(errors).mean())
    # measured 30.8 dB: nearest-pixel splatting of sub-pixel shifts of fine textures
    assert 28.0 < pooled < 40.0
    assert holes_outside == 0


def test_captions_use_vocabulary_and_name_visible_colours():
    matches = checked = 0
    for seed in range(30):
        s = world.make_scene(seed, 48, 48, 2)
        words = world.tokenize(s.caption)
        meta = s.metadata
        assert meta["background"]["colour"] in words and meta["background"]["texture"] in words
        for obj in meta["objects"]:
            assert {obj["colour"], obj["shape"], obj["size"], obj["texture"]} <= set(words)
            pixels = s.left[0][s.left_labels[0] == obj["label"]]
            if len(pixels) >= 40:
                checked += 1
                matches += world.colour_name(pixels.mean(0)) == obj["colour"]
    assert checked >= 30 and matches >= 0.9 * checked  # measured 79 of 81
    with pytest.raises(ValueError, match="caption"):
        world.tokenize("a plaid unicorn")


def test_colour_names_of_palette():
    for name, rgb in world.COLOURS.items():
        assert world.colour_name(rgb) == name
    h, s, v = colorsys.rgb_to_hsv(*world.COLOURS["blue"])
    assert world.colour_name(colorsys.hsv_to_rgb(h, s, v * 0.7)) == "blue"


def test_variety_across_seeds():
    specs = [world.sample_spec(s) for s in range(60)]
    counts = {len(p.objects) for p in specs}
    shapes = {o.shape for p in specs for o in p.objects}
    kinds = {o.texture.kind for p in specs for o in p.objects} | {p.background.texture.kind for p in specs}
    colours = {o.colour for p in specs for o in p.objects}
    motions = {o.motion for p in specs for o in p.objects}
    assert counts == {1, 2, 3, 4, 5}
    assert len(shapes) == len(world.SHAPES)
    assert len(kinds) >= 12 and len(colours) >= 8 and len(motions) == 4
    assert any(p.background.sloping for p in specs) and any(p.background.drift for p in specs)
    assert len({p.caption for p in specs}) == 60
    # captions fit a 77-token text encoder with SOT/EOT (measured max 61 words over 3000 seeds)
    assert max(len(world.tokenize(p.caption)) for p in specs) <= 75
    assert any(o.depth_rate for p in specs for o in p.objects)
    assert world.sample_spec(3, num_objects=0).objects == ()


def test_batch_stacks_scenes():
    b = world.batch([1, 2, 3], 16, 24, 2, integer_disparity=True)
    assert b.left.shape == (3, 2, 16, 24, 3) and b.disparity.shape == (3, 2, 16, 24)
    assert len(b.caption) == 3 and b.caption[1] == world.make_scene(2, 16, 24, 2).caption
    assert json.loads(json.dumps(b.metadata[0]))["seed"] == 1
    np.testing.assert_array_equal(
        b.right[2], world.make_scene(3, 16, 24, 2, integer_disparity=True).right)


@pytest.mark.parametrize("kwargs, match", [
    (dict(seed=-1), "seed"),
    (dict(height=4), "height"),
    (dict(frames=0), "frames"),
    (dict(max_disparity=40.0), "max_disparity"),
    (dict(max_disparity=0.5, integer_disparity=True), "max_disparity"),
    (dict(num_objects=9), "num_objects"),
])
def test_invalid_arguments_raise(kwargs, match):
    args = dict(seed=0, height=16, width=32, frames=2) | kwargs
    with pytest.raises(ValueError, match=match):
        world.make_scene(args.pop("seed"), args.pop("height"), args.pop("width"),
                         args.pop("frames"), **args)
