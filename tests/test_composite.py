"""The source-resolution composite (szero_jax.pipelines.composite): the warp outside the
feathered holes exactly, the fill inside, and its option in the video pipelines."""
import dataclasses

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from szero_jax.geometry import forward_warp
from szero_jax.pipelines.composite import CompositeConfig, composite_right, hole_alpha


@pytest.mark.parametrize("dilate,feather", [(2, 2), (1, 3), (3, 0), (0, 1)])
def test_hole_alpha_is_the_euclidean_ramp(dilate, feather):
    holes = np.random.RandomState(0).rand(3, 30, 40) > 0.97
    alpha = np.asarray(hole_alpha(holes, dilate, feather))
    dist = np.stack([distance_transform_edt(~h) for h in holes])
    want = (dist <= dilate) * 1.0 if feather == 0 else np.clip((dilate + feather - dist) / feather,
                                                              0, 1)
    np.testing.assert_allclose(alpha, want, atol=1e-6)
    assert np.all(alpha[dist > dilate + feather] == 0)
    assert np.all(alpha[holes] == 1)


def test_composite_is_the_warp_beyond_reach_and_the_fill_in_holes():
    rng = np.random.RandomState(1)
    left = rng.rand(2, 3, 24, 40, 3).astype(np.float32)
    disparity = np.ones((2, 3, 24, 40), np.float32)          # a near box on a far plane
    for b in range(2):
        for t in range(3):
            disparity[b, t, 5 + t:15 + t, 8 + 3 * b:20 + 3 * b] = 6.0
    fill = rng.rand(2, 3, 24, 40, 3).astype(np.float32)
    out = composite_right(left, disparity, fill)
    warped, holes = forward_warp(left, disparity)
    warped, holes = np.asarray(warped), np.asarray(holes)
    np.testing.assert_array_equal(np.asarray(out.holes), holes)
    dist = np.stack([distance_transform_edt(~h) for h in holes.reshape(-1, 24, 40)]).reshape(
        holes.shape)
    far = dist > CompositeConfig().reach
    assert far.mean() > 0.2 and holes.mean() > 0.02
    np.testing.assert_array_equal(np.asarray(out.right)[far], warped[far])
    np.testing.assert_allclose(np.asarray(out.right)[holes], fill[holes], atol=1e-6)
    # zero disparity: no holes, the right view is the left exactly
    same = composite_right(left, np.zeros_like(disparity), fill)
    np.testing.assert_array_equal(np.asarray(same.right), left)


def test_composite_rejects_bad_shapes_and_config():
    x = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="disparity"):
        composite_right(x, np.zeros((4, 5)), x)
    with pytest.raises(ValueError, match="dilate"):
        composite_right(x, np.zeros((4, 4)), x, CompositeConfig(dilate=-1))


def test_video_pipeline_composite_option():
    """``StereoCrafterZeroConfig.right_view="composite"``: the decoded left warped outside
    the holes' reach, the latent right view inside the holes (tiny family, 2 steps)."""
    from szero_jax import pipelines, world
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig
    from szero_jax.stereo import StereoCrafterZeroConfig
    models = pipelines.load_video_models(None)
    scene = world.make_scene(1_000_004, 80, 128, models.num_frames)
    kwargs = dict(sampling=SamplingConfig.inversion(steps=3),
                  depth=DepthConfig(kind="disparity_px", blur_sigma=0.0),
                  depth_map=scene.disparity)
    base = StereoCrafterZeroConfig(restart_steps=1, restart_rounds=1, refine_rounds=0)
    latent = pipelines.video_to_stereo_video(models, scene.left, scene.caption, stereo=base,
                                             **kwargs)
    comp = pipelines.video_to_stereo_video(
        models, scene.left, scene.caption,
        stereo=dataclasses.replace(base, right_view="composite"), **kwargs)
    np.testing.assert_array_equal(comp.left, latent.left)
    np.testing.assert_array_equal(comp.disparity, scene.disparity)
    warped, holes = forward_warp(comp.left[None], comp.disparity[None])
    warped, holes = np.asarray(warped[0]), np.asarray(holes[0])
    dist = np.stack([distance_transform_edt(~h) for h in holes])
    far = dist > CompositeConfig().reach
    np.testing.assert_allclose(comp.right[far], warped[far], atol=1e-6)
    np.testing.assert_allclose(comp.right[holes], latent.right[holes], atol=1e-6)
    assert holes.mean() > 0.01 and "composite" in comp.timings
    with pytest.raises(ValueError, match="right_view"):
        dataclasses.replace(base, right_view="both").validate(10)
