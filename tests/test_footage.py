"""The arithmetic of whole-video conversion (szero_jax.pipelines.footage): windows, blend
weights, the letterbox, the one normalisation, depth stitching, seams, the process split."""
import numpy as np
import pytest

from szero_jax.pipelines import footage as F


@pytest.mark.parametrize("frames,length,overlap", [(200, 8, 2), (20, 8, 2), (8, 8, 2), (3, 8, 2),
                                                   (100, 16, 4), (9, 8, 0), (50, 8, 7)])
def test_windows_cover_every_frame_once_blended(frames, length, overlap):
    wins = F.plan_windows(frames, length, overlap)
    assert all(w.stop - w.start == length for w in wins)
    assert wins[0].start == 0 and wins[-1].stop == max(frames, length)
    starts = [w.start for w in wins]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # consecutive windows overlap by at least `overlap` frames (the last may overlap more)
    for a, b in zip(wins, wins[1:]):
        assert a.stop - b.start >= overlap
        if b is not wins[-1]:
            assert a.stop - b.start == overlap
    for t in range(frames):
        weights = F.frame_weights(wins, overlap, t)
        assert weights and abs(sum(w for _, w in weights) - 1.0) < 1e-12
        assert all(0 < w <= 1 for _, w in weights)


def test_blend_ramps_skip_a_windows_first_frame():
    wins = F.plan_windows(20, 8, 2)            # starts 0, 6, 12
    assert [w.start for w in wins] == [0, 6, 12]
    assert F.frame_weights(wins, 2, 5) == [(0, 1.0)]
    assert F.frame_weights(wins, 2, 6) == [(0, 1.0)]      # window 1's first frame: weight 0
    assert F.frame_weights(wins, 2, 7) == [(0, 0.5), (1, 0.5)]
    assert F.frame_weights(wins, 2, 8) == [(1, 1.0)]
    assert F.frame_weights(wins, 2, 19) == [(2, 1.0)]       # no ramp at the video's end
    wide = F.plan_windows(20, 8, 4)            # starts 0, 4, 8, 12: DepthCrafter's linspace
    assert [F.frame_weights(wide, 4, t) for t in (4, 5, 6, 7, 8)] == [
        [(0, 1.0)], [(0, 0.75), (1, 0.25)], [(0, 0.5), (1, 0.5)], [(0, 0.25), (1, 0.75)],
        [(1, 1.0)]]


def test_short_video_one_padded_window():
    assert F.plan_windows(3, 8, 2) == (F.Window(0, 0, 8),)
    assert F.padded_length(3, F.plan_windows(3, 8, 2)) == 8


@pytest.mark.parametrize("n,processes", [(33, 1), (33, 2), (33, 4), (3, 4)])
def test_split_windows_disjoint_contiguous_cover(n, processes):
    wins = F.plan_windows(n * 6 + 2, 8, 2)[:n]
    blocks = [F.split_windows(wins, p, processes) for p in range(processes)]
    assert sum(blocks, ()) == wins
    with pytest.raises(ValueError, match="process"):
        F.split_windows(wins, processes, processes)


@pytest.mark.parametrize("src,model,content", [((160, 256), (80, 128), (0, 0, 80, 128)),
                                                ((1080, 1920), (80, 128), (4, 0, 72, 128)),
                                                ((100, 100), (80, 128), (0, 24, 80, 80)),
                                                ((40, 64), (80, 128), (0, 0, 80, 128))])
def test_letterbox_content(src, model, content):
    lb = F.Letterbox(src, model)
    assert lb.content == content
    assert lb.content_mask().sum() == content[2] * content[3]
    img = np.full((2,) + src + (3,), 0.25, np.float32)
    m = np.asarray(lb.to_model(img))
    assert m.shape == (2,) + model + (3,)
    mask = lb.content_mask()
    np.testing.assert_allclose(m[:, mask], 0.25, atol=1e-6)
    assert np.all(m[:, ~mask] == 0)
    back = np.asarray(lb.from_model(m))
    assert back.shape == img.shape
    np.testing.assert_allclose(back, 0.25, atol=1e-5)
    # disparity in source pixels -> model-frame pixels scale by the content's width ratio
    d = np.asarray(lb.disparity_to_model(np.full((1,) + src, 10.0, np.float32)))
    np.testing.assert_allclose(d[0][mask], 10.0 * content[3] / src[1], rtol=1e-5)
    assert np.all(d[0][~mask] == 0)


def test_bounds_one_normalisation_smoothed():
    rng = np.random.RandomState(0)
    values = rng.rand(30, 8, 8).astype(np.float32) * np.linspace(1, 2, 30)[:, None, None]
    b = F.frame_bounds(values)
    np.testing.assert_allclose(b[3], np.percentile(values[3], [1, 99]), rtol=1e-6)
    flat = np.tile([[0.2, 0.8]], (30, 1))
    np.testing.assert_allclose(F.smooth_bounds(flat, 5.0), flat, rtol=1e-12)   # constant kept
    np.testing.assert_array_equal(F.smooth_bounds(b, 0.0), b)
    smooth = F.smooth_bounds(b, 3.0)
    assert np.abs(np.diff(smooth, axis=0)).max() < np.abs(np.diff(b, axis=0)).max()
    n = np.asarray(F.normalise(values, smooth.astype(np.float32)))
    assert n.min() >= 0 and n.max() <= 1
    lo, hi = smooth[10]
    np.testing.assert_allclose(n[10], np.clip((values[10] - lo) / (hi - lo), 0, 1), atol=1e-5)
    zero = np.asarray(F.normalise(np.ones((2, 4, 4), np.float32),
                                  np.array([[1, 1], [1, 1]], np.float32)))
    assert np.all(zero == 0)            # a flat frame carries no depth
    np.testing.assert_allclose(F.to_pixels(np.float32(0.5), 0.1, 200, 0.25), 5.0)


def test_depth_stitcher_undoes_per_window_affine():
    """Windows of one signal, each with its own scale and shift (relative depth), stitch
    back to the signal up to the first window's affine; every frame comes out once."""
    rng = np.random.RandomState(1)
    frames, length, overlap = 40, 8, 3
    truth = rng.rand(frames, 6, 6) + np.linspace(0, 1, frames)[:, None, None]
    wins = F.plan_windows(frames, length, overlap)
    stitch = F.DepthStitcher(wins, overlap, frames)
    out = {}
    for w in wins:
        a, b = (1.0, 0.0) if w.index == 0 else (rng.uniform(0.5, 2), rng.uniform(-1, 1))
        for t, frame in stitch.add(w, a * truth[w.start:w.stop] + b):
            assert t not in out
            out[t] = frame
    assert sorted(out) == list(range(frames))
    got = np.stack([out[t] for t in range(frames)])
    np.testing.assert_allclose(got, truth, atol=1e-4)
    assert len(stitch.alignments) == len(wins)


def test_depth_stitcher_padded_short_video():
    wins = F.plan_windows(5, 8, 2)
    stitch = F.DepthStitcher(wins, 2, 5)
    rel = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((8, 2, 2))
    got = stitch.add(wins[0], rel)
    assert [t for t, _ in got] == list(range(5))
    np.testing.assert_allclose(got[4][1], 4.0)


def test_seam_meter_classifies_pairs():
    wins = F.plan_windows(20, 8, 2)
    meter = F.SeamMeter(wins, 2)
    holes = np.ones((2, 2), bool)
    seams = (7, 8, 13, 14)
    prev = np.zeros((2, 2, 3), np.uint8)
    for t in range(1, 20):
        cur = np.full((2, 2, 3), 10 if t in seams else 0, np.uint8)
        meter.add(t, prev, holes, cur, holes)
        prev = np.zeros_like(cur) if t in seams else cur
    s = meter.summary()
    # windows [0, 8), [6, 14), [12, 20), overlap 2: the blend weights change from t - 1 to
    # t at t = 7, 8 (into and out of the overlap; a window's first frame has weight 0) and
    # 13, 14
    assert s["seam_pairs"] == 4 and s["inside_pairs"] == 15
    np.testing.assert_allclose(s["hole_change_at_seams"], 10 / 255)
    assert s["hole_change_inside_windows"] == 0.0
    state = meter.state()
    other = F.SeamMeter(wins, 2)
    other.load(state)
    assert other.summary() == s


def test_footage_config_validation():
    F.FootageConfig().validate()
    with pytest.raises(ValueError, match="right: expected one of"):
        F.FootageConfig(right="both").validate()
    with pytest.raises(ValueError, match="overlap"):
        F.FootageConfig(overlap=-1).validate()
    with pytest.raises(ValueError, match="window"):
        F.FootageConfig(depth_window=1).validate()
    with pytest.raises(ValueError, match="overlap: expected an overlap in \\[0, 7\\]"):
        F.FootageConfig(overlap=8).overlap_for(8)
    assert F.FootageConfig().overlap_for(8) == 4 and F.FootageConfig().overlap_for(110) == 55


def test_report_sampler_frames_histogram_and_resume(tmp_path):
    """footage_report: the frames ReportFrames.sample would pick, shrunk by block means to
    at most 640 px wide, and a histogram of every pixel of every frame, continued across a
    resume (state / load) exactly as one pass."""
    from szero_jax.io.report import HIST_BINS, ReportFrames
    from szero_jax.pipelines import footage_report as R
    rng = np.random.RandomState(0)
    t, h, w = 21, 6, 1300                       # ceil(1300 / 640) = 3: 2 x 433 frames
    left, right = (rng.randint(0, 256, (t, h, w, 3)).astype(np.uint8) for _ in range(2))
    d = rng.uniform(-2, 5, (t, h, w)).astype(np.float32)
    holes = rng.rand(t, h, w) > 0.95
    first = R.ReportSampler(t, w, (-2.0, 5.0))
    for s in range(0, 16, 8):
        first.add(s, left[s:s + 8], right[s:s + 8], d[s:s + 8], holes[s:s + 8])
    np.savez(tmp_path / "report_000000.npz", **first.take())
    assert first.take() is None
    second = R.ReportSampler(t, w, (-2.0, 5.0))      # a resumed run
    second.load(first.state())
    second.add(16, left[16:], right[16:], d[16:], holes[16:])
    np.savez(tmp_path / "report_000001.npz", **second.take())
    frames = R.report_frames(tmp_path, second.state())
    want = ReportFrames.sample(left, right, d, holes, count=4)
    assert frames.indices == want.indices == (0, 7, 13, 20)
    counts, edges = frames.histogram
    np.testing.assert_array_equal(counts, np.histogram(d, HIST_BINS, range=(-2, 5))[0])
    assert counts.sum() == t * h * w
    np.testing.assert_allclose(edges, np.linspace(-2, 5, HIST_BINS + 1))
    assert frames.left.shape == (4, 2, 433, 3) and frames.left.dtype == np.uint8
    block = left[13, 3:6, 6:9].reshape(-1, 3).astype(np.float32).mean(0)
    np.testing.assert_array_equal(frames.left[2, 1, 2], np.round(block).astype(np.uint8))
    np.testing.assert_allclose(frames.disparity[3, 0, 0], d[20, :3, :3].mean(), rtol=1e-6)
    assert frames.holes[1, 0, 0] == holes[7, :3, :3].any()
    flat = R.ReportSampler(3, 64, (1.5, 1.5))         # a flat disparity: one bin around it
    assert flat.range == (1.0, 2.0) and flat.factor == 1
    with pytest.raises(ValueError, match="pixel_range: expected finite"):
        R.ReportSampler(3, 64, (0.0, float("nan")))
    with pytest.raises(ValueError, match="does not continue"):
        R.ReportSampler(t, w, (-2.0, 6.0)).load(first.state())
