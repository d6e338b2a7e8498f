"""StereoCrafter-Zero sampler (paper Sec. 3.1-3.2, 4.1): the right view's latents are made
by warping the left view's, with noisy restart (Eq. 2), border handling (Eq. 3), re-warping
with iterative refinement of the holes (Eq. 4) and cross-view attention.

Shape of the program. Every network evaluation of the method is one *event*; the host lays
the events out in order (restart rounds x window steps, then each later step followed by its
refinement rounds) as per-event arrays, and one ``lax.scan`` runs them, each event one
batched call on ``[left; right]``. K, L, N, w and the stop step only change those arrays
(their length and values), never the traced program, and the network appears once in it
(a nested scan would trace it twice: once in the restart scan, once in the refinement one).

Batching. The right view at step i is built from the *left latent at step i*, which is the
input of the left's own step i, so both views go through one call: during the first restart
round and on every later step the left half of the call *is* the left view's sampling step
(its output advances the left trajectory). The other restart rounds replay the stored left
latents of the window, and refinement rounds re-evaluate the step; their left outputs are
dropped. Modes ``none``/``uni``/``uni_query`` leave the left rows untouched, so the left
view is exactly the plain left-only sample. With ``bi``/``swap`` the left trajectory is the
one the batched calls produce (the released code instead overwrites it with a separate
left-only pass after every step).

Paper vs released code (shijianjian/StereoCrafter-Zero; see docs/references.md): the
defaults are the paper's; ``StereoCrafterZeroConfig.released()`` gives the released run.
  * restart window: K = 6 (t = 49..44): Tables 4-5 pick K = 6, L = 7 as best and Table 5's
    N = 0 total is 6 x 7 = 42; the released code runs loop steps 0-5. Sec. 4.1's "t = 49 to
    t = 45" (K = 5) disagrees with both tables and the code, so it is read as the slip;
  * first restart round: paper fills every window step's holes from the (unwarped) left
    latent; released only step 0, later steps from the previous step's right output;
  * Eq. 2: paper ``x (1 - a) + sigma eps' a``; released also scales ``x`` by
    ``sigma_t / sigma_{t+1}``. Both use a = sqrt(alpha_bar_t), sigma_t the DDIM sigma
    (released ``n_weight`` / ``ddim_sigmas``; the paper names neither), so at eta = 0 the
    restart adds no noise and only shrinks the fill;
  * border (Eq. 3): paper hard replacement by the left latent; released 0.9 left + 0.1 fill;
  * re-warp + refinement: paper every 5 steps down to t = 15, N = 4 extra evaluations on the
    holes. Read as Table 5 counts it (+2 N evaluations per N, i.e. 7 stages): the first step
    after the restart window, then t = 40, 35, ..., 15, the released ``olist`` cut at step
    34 (= {6, 9, 14, 19, 24, 29, 34}). Released: a (step, evaluations) list
    (``released_refine_schedule``) and Eq. 4's replacement scaled by ``sigma_t / sigma_{t+1}``;
  * step noise (eta > 0): one draw per step, shared by the restart rounds (the paper's fixed
    eps'_t and the released re-seeding of every pass); every refinement round draws its own
    (each released ``rp_times`` evaluation is a ``p_sample_ddim`` call, which draws afresh):
    in the holes only by default, so outside them the right view keeps the step's (warped
    left) noise; ``refine_noise="all"``: everywhere, as released;
  * right-view noise (eta > 0): the left noise warped by the disparity, fresh noise in the
    holes (what the released code intends); ``"reuse_left"`` is what it runs;
  * cross-view attention: paper on all sampling steps, self-attention only (Sec. 4.1: "apart
    from the cross-attention between the latents and the conditions"); released a window of
    network *evaluations* [25, 45) counted across restart rounds and refinements, and the
    left queries also in the text/image cross-attention (``uni_query_all``, see
    ``szero_jax.models.attention``);
  * pipeline-level settings the preset carries (the sampler ignores them): guidance rescale
    off, dissolving with the conditional UNet only and no disparity re-normalisation.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.diffusion import DDIMPlan, ddim_step, plan_at
from szero_jax.diffusion.guidance import check_prediction_type
from szero_jax.geometry import background_fill, border_mask, forward_warp, warped_disparity
from szero_jax.stereo.common import (StereoDenoiseFn, check_latent_and_disparity, join_views,
                                     mode_code, split_views)

# Released funcs_stereo.py `olist`: (loop step, network evaluations at that step).
_RELEASED_OLIST = ((6, 8), (9, 8), (14, 3), (19, 6), (24, 6), (29, 6), (34, 6), (39, 6),
                   (44, 4), (49, 4))


def released_refine_schedule(max_warp_step: int = 40) -> Tuple[Tuple[int, int], ...]:
    """The released (step, extra refinement rounds) list: ``olist`` filtered to steps
    <= ``max_warp_step`` (released default 40, funcs_stereo.py) plus the entry it always
    appends, ``(max_warp_step, last count)``; evaluations - 1 = extra rounds."""
    kept = [(s, n) for s, n in _RELEASED_OLIST if s <= max_warp_step]
    if kept and max_warp_step not in [s for s, _ in kept]:
        kept.append((max_warp_step, kept[-1][1]))
    return tuple((s, n - 1) for s, n in kept)


DEPTH_NORMALISATIONS = ("percentiles", "none")
FIRST_ROUND_FILLS = ("left", "background", "previous_step")
RIGHT_CONDITIONS = ("warped", "warped_background", "left")


@dataclasses.dataclass(frozen=True)
class StereoCrafterZeroConfig:
    """Settings of the stereo part; the DDIM plan (steps, eta, CFG) is separate.

    Steps are loop positions 0..S-1 (0 = noisiest); the paper's ``t`` is ``S - 1 - step``.
    """
    restart_steps: int = 6                  # K: paper Tabs. 4-5 (K = 6 best; Sec. 4.1 says 5)
    restart_rounds: int = 7                 # L: paper Sec. 3.1 / 4.1
    first_round_fill: str = "left"          # paper Sec. 3.1; "previous_step": released;
                                            # "background": the warped left stretched from
                                            # the holes' far side (ours: the unwarped left
                                            # there is the occluder, seen as a ghost)
    restart_sigma_ratio: bool = False       # released ddim_stereo.py scales by sigma_t/sigma_{t+1}
    border: str = "hard"                    # Eq. 3; "blend": released; "off"
    border_left_weight: float = 0.9         # released ddim_stereo.py clean_border `lam`
    warp_every: int = 5                     # w: paper Sec. 4.1 "every 5 steps"
    warp_stop_t: int = 15                   # paper Sec. 4.1: last refinement at t = 15
    refine_rounds: int = 4                  # N: paper Sec. 4.1, Tab. 5
    refine_schedule: Optional[Tuple[Tuple[int, int], ...]] = None  # (step, N) pairs; None: paper rule
    refine_sigma_ratio: bool = False        # released scales Eq. 4's update by sigma_t/sigma_{t+1}
    refine_noise: str = "holes"             # a refinement round's own noise (eta > 0) in the
                                            # holes Eq. 4 re-denoises, the step's outside (ours);
                                            # "all": released (p_sample_ddim draws afresh)
    right_noise: str = "warped"             # released intent; "reuse_left": as released runs
    cross_view: str = "uni_query"           # released BNAttention(direction='uni'): left queries,
                                            # self-attention only as Sec. 4.1 says; released
                                            # runs "uni_query_all" (also cross-attention)
    cross_view_window: Tuple[int, Optional[int]] = (0, None)  # paper Sec. 4.1: all steps
    cross_view_counts_evaluations: bool = False  # released: the window counts evaluations
    # Image condition of the right view (DynamiCrafter's concatenated first-frame latent;
    # the paper is silent): "warped" = the left one warped by the first frame's disparity,
    # holes keeping the left's (ours: DynamiCrafter copies its concat image, so an unwarped
    # one pulls the right view back onto the left's geometry, see DESIGN.md); "left": released;
    # "warped_background": warped, holes stretched from their far side (ours, as
    # first_round_fill "background": the left's values there are the occluder's).
    right_condition: str = "warped"
    # Pipeline-level settings of the released run, carried here so the preset holds them;
    # the sampler ignores them, the pipelines read them (None / defaults: theirs).
    guidance_rescale: Optional[float] = None  # None: the sampling config's (run.sh 0.7);
                                              # released 0: commented out in p_sample_ddim
    dissolve_cfg: bool = True               # dissolving call guided like the depth sampling;
                                            # released False: conditional UNet only
                                            # (depthcrafter.py forward_and_dissolve)
    depth_normalisation: str = "percentiles"  # (1, 99) re-normalisation of the model depth
                                              # (ours); "none": released, decoded values used
                                              # as is (``dissolve.released_disparity``)
    right_view: str = "latent"              # "latent": the decoded right view (paper,
                                            # released); "composite": the decoded left warped
                                            # at pixel level, the latent one in the holes only
                                            # (``pipelines.composite``, ours)

    @classmethod
    def released(cls, max_warp_step: int = 40, **overrides) -> "StereoCrafterZeroConfig":
        """The released code's run (funcs_stereo.py ``batch_stereo_ddim_sampling``)."""
        base = dict(
            restart_steps=6,                    # modify_step = [0, 1, 2, 3, 4, 5]
            first_round_fill="previous_step",
            restart_sigma_ratio=True,
            border="blend",
            refine_schedule=released_refine_schedule(max_warp_step),
            refine_sigma_ratio=True,
            refine_noise="all",
            right_noise="reuse_left",
            cross_view="uni_query_all",         # BNAttention edits q before sim and sim_ip
            cross_view_window=(25, 45),         # stereo_att_start_step / end_step
            cross_view_counts_evaluations=True,
            right_condition="left",             # both views share the conditioning batch
            guidance_rescale=0.0,               # ddim.py: the rescale is commented out
            dissolve_cfg=False,                 # depthcrafter.py: one conditional UNet call
            depth_normalisation="none")         # funcs_stereo.py: DepthCrafter output as is
        base.update(overrides)
        return cls(**base)

    def validate(self, num_steps: int) -> None:
        def choice(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        choice("first_round_fill", FIRST_ROUND_FILLS)
        choice("border", ("hard", "blend", "off"))
        choice("right_noise", ("warped", "reuse_left"))
        choice("refine_noise", ("holes", "all"))
        choice("right_condition", RIGHT_CONDITIONS)
        choice("depth_normalisation", DEPTH_NORMALISATIONS)
        choice("right_view", ("latent", "composite"))
        mode_code(self.cross_view, "cross_view")
        if not 1 <= self.restart_steps <= num_steps:
            raise ValueError(f"restart_steps must be in [1, {num_steps}], got {self.restart_steps}")
        if self.restart_rounds < 1:
            raise ValueError(f"restart_rounds must be >= 1, got {self.restart_rounds}")
        if self.warp_every < 1:
            raise ValueError(f"warp_every must be >= 1, got {self.warp_every}")
        if self.warp_stop_t < 0:
            raise ValueError(f"warp_stop_t must be >= 0, got {self.warp_stop_t}")
        if self.refine_rounds < 0:
            raise ValueError(f"refine_rounds must be >= 0, got {self.refine_rounds}")
        if not 0.0 <= self.border_left_weight <= 1.0:
            raise ValueError(f"border_left_weight must be in [0, 1], got {self.border_left_weight}")
        if self.guidance_rescale is not None and not 0.0 <= self.guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must be None or in [0, 1], got "
                             f"{self.guidance_rescale}")
        for step, n in self.refine_schedule or ():
            if not self.restart_steps <= step < num_steps or n < 0:
                raise ValueError(
                    f"refine_schedule entries must be (step in [restart_steps={self.restart_steps}, "
                    f"{num_steps}), rounds >= 0), got {(step, n)}")

    def warp_steps(self, num_steps: int) -> dict:
        """{step: extra refinement rounds} of the warp stages after the restart window.

        Paper rule (no ``refine_schedule``): the first step after the window, then every
        ``warp_every`` steps on the t grid (t = 40, 35, ... at 50 steps), while
        t >= ``warp_stop_t``: at K = 6, 50 steps {6, 9, 14, 19, 24, 29, 34}, the 7 stages
        Table 5's totals imply and the released ``olist`` cut at step 34."""
        if self.refine_schedule is not None:
            out = {}
            for step, n in self.refine_schedule:
                out.setdefault(step, n)     # released: the first entry of a step wins
            return out
        first = self.restart_steps
        grid = [s for s in range(first + 1, num_steps) if (num_steps - 1 - s) % self.warp_every == 0]
        return {s: self.refine_rounds for s in [first] + grid
                if s < num_steps and num_steps - 1 - s >= self.warp_stop_t}


class StereoEvents(NamedTuple):
    """The whole schedule as data: per-evaluation arrays [E], the restart window [K], and
    the numeric switches as scalars. Build with ``build_events`` (host numpy); pass it to
    ``stereocrafter_zero_run`` as a jit *argument*, so configs with the same E and K share
    one compiled program."""
    step: np.ndarray          # int32 [E]: plan step
    slot: np.ndarray          # int32 [E]: restart window slot (0 outside the restart)
    restart: np.ndarray       # bool [E]
    round0: np.ndarray        # bool [E]: first restart round
    fill_left: np.ndarray     # bool [E]: fill holes from the unwarped left latent
    warp: np.ndarray          # bool [E]: rebuild the right input from the warped left
    refine: np.ndarray        # bool [E]: Eq. 4 round
    advance_left: np.ndarray  # bool [E]: the left output is the left view's next latent
    mode: np.ndarray          # int32 [E]: cross-view mode
    window: np.ndarray        # int32 [K]: restart window steps (its length sizes the stores)
    border_weight: np.ndarray      # float32 scalar: left weight in border holes (0 = off)
    restart_sigma_ratio: np.ndarray  # bool scalar
    refine_sigma_ratio: np.ndarray   # bool scalar
    warp_noise: np.ndarray         # bool scalar: right noise = warped left noise
    refine_noise_all: np.ndarray   # bool scalar: refinement rounds draw noise everywhere
    fill_background: np.ndarray    # bool scalar: fill_left events stretch the warped left
                                   # from the holes' far side instead


def build_events(config: StereoCrafterZeroConfig, num_steps: int) -> StereoEvents:
    """Lay out every network evaluation of the method in order."""
    config.validate(num_steps)
    k, n_rounds = config.restart_steps, config.restart_rounds
    rows = []
    for r in range(n_rounds):
        for s in range(k):
            fill_left = r == 0 and (config.first_round_fill != "previous_step" or s == 0)
            rows.append((s, s, True, r == 0, fill_left, True, False, r == 0))
    stages = config.warp_steps(num_steps)
    for s in range(k, num_steps):
        rows.append((s, 0, False, False, False, s in stages, False, True))
        rows.extend((s, 0, False, False, False, False, True, False)
                    for _ in range(stages.get(s, 0)))
    cols = list(zip(*rows))
    steps = np.asarray(cols[0], np.int32)
    start, end = config.cross_view_window
    end = np.iinfo(np.int32).max if end is None else end
    clock = np.arange(len(rows)) if config.cross_view_counts_evaluations else steps
    on = (clock >= start) & (clock < end)
    mode = np.where(on, mode_code(config.cross_view, "cross_view"), mode_code("none", "none"))
    border = {"hard": 1.0, "blend": config.border_left_weight, "off": 0.0}[config.border]
    return StereoEvents(
        steps, np.asarray(cols[1], np.int32), *(np.asarray(c, bool) for c in cols[2:]),
        mode.astype(np.int32), np.arange(k, dtype=np.int32), np.float32(border),
        np.bool_(config.restart_sigma_ratio), np.bool_(config.refine_sigma_ratio),
        np.bool_(config.right_noise == "warped"), np.bool_(config.refine_noise == "all"),
        np.bool_(config.first_round_fill == "background"))


def num_evaluations(config: StereoCrafterZeroConfig, num_steps: int) -> int:
    """Batched network calls the sampler makes (each on both views)."""
    return int(build_events(config, num_steps).step.shape[0])


def restart_and_refine_evaluations(config: StereoCrafterZeroConfig, num_steps: int) -> int:
    """The paper's "Total Steps" (Tables 4-5): restart evaluations K x L plus the refinement
    rounds; the later plain steps (and the left-only pass) are not counted, as Table 4's
    totals (exactly K x L) show. Paper preset at 50 steps: 42 + 7 N."""
    ev = build_events(config, num_steps)
    return int(ev.restart.sum() + ev.refine.sum())


def pad_events(events: StereoEvents, num_events: int, window: int) -> StereoEvents:
    """The same schedule as ``events`` in a program of ``num_events`` evaluations and a
    restart window of ``window`` slots, so that configs of different E and K share one
    compiled ``stereocrafter_zero_run``.

    Each added evaluation is a restart event of a later round at a spare slot (>= the real
    K), placed *before* the real events: it reads and writes only that slot's stores, never
    advances the left view, and the first real event (round 0, slot 0, filled from the left)
    reads none of the carry it leaves. The real events therefore compute what they compute
    unpadded, at any eta: step noise is drawn per step, refinement noise per (step, round),
    and the fixed restart noise at the padded window's shape, whose first K slots are the
    unpadded draw (JAX's default partitionable threefry draws element by element). The added
    evaluations cost network time."""
    e = int(events.step.shape[0])
    k = int(events.window.shape[0])
    extra = num_events - e
    if extra < 0 or window < k or (extra > 0 and window < k + 1):
        raise ValueError(f"cannot pad a schedule of {e} events / window {k} to {num_events} / "
                         f"{window} (num_events >= E, window >= K, and > K to add events)")
    if not (bool(events.restart[0]) and bool(events.round0[0]) and bool(events.fill_left[0])
            and int(events.slot[0]) == 0):
        raise ValueError("pad_events needs a schedule that starts with restart round 0 at slot "
                         "0 filled from the left (as build_events lays it out)")
    if extra == 0 and window == k:
        return events
    pad = lambda a, v: np.concatenate([np.full(extra, v, a.dtype), np.asarray(a)])
    filler = dict(step=0, slot=window - 1, restart=True, round0=False, fill_left=False,
                  warp=True, refine=False, advance_left=False, mode=0)
    return events._replace(**{f: pad(getattr(events, f), v) for f, v in filler.items()},
                           window=np.arange(window, dtype=np.int32))


def schedule_buckets(sizes, n_buckets: int) -> dict:
    """Group schedules by their (E, K) (one entry per config; ``build_events`` gives E =
    ``step.shape[0]``, K = ``window.shape[0]``) into at most ``n_buckets`` compiled programs,
    minimising the total padded evaluations (each config runs at its group's largest E).
    Returns {(E, K): (E_pad, K_pad)} for ``pad_events``: K_pad is the group's largest K, plus
    the spare slot ``pad_events`` needs when the group pads any config's E."""
    sizes = [tuple(map(int, s)) for s in sizes]
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    items = sorted(set(sizes))
    if not items:
        return {}
    es = [e for e, _ in items]
    weight = [sizes.count(it) for it in items]       # configs per size
    n = len(items)
    n_buckets = min(n_buckets, n)
    inf = float("inf")
    # cost[j][i]: the least padded total of items[:i] in j groups (groups are runs of the
    # E-sorted items, each padded to its last E); cut[j][i]: where its last group starts.
    cost = [[inf] * (n + 1) for _ in range(n_buckets + 1)]
    cut = [[0] * (n + 1) for _ in range(n_buckets + 1)]
    cost[0][0] = 0
    for j in range(1, n_buckets + 1):
        for i in range(1, n + 1):
            for a in range(j - 1, i):
                c = cost[j - 1][a] + es[i - 1] * sum(weight[a:i])
                if c < cost[j][i]:
                    cost[j][i], cut[j][i] = c, a
    best_j = min(range(1, n_buckets + 1), key=lambda j: cost[j][n])
    out, i, j = {}, n, best_j
    while i > 0:
        a = cut[j][i]
        group = items[a:i]
        e_pad = max(e for e, _ in group)
        k_pad = max(k for _, k in group) + (1 if any(e < e_pad for e, _ in group) else 0)
        for size in group:
            out[size] = (e_pad, k_pad)
        i, j = a, j - 1
    return out


_PER_EVENT = ("step", "slot", "restart", "round0", "fill_left", "warp", "refine",
              "advance_left", "mode")
_Event = NamedTuple("_Event", [(f, jax.Array) for f in _PER_EVENT])


class StereoOutput(NamedTuple):
    left: jax.Array     # final left latent
    right: jax.Array    # final right latent
    holes: jax.Array    # bool, holes of the last warp (disparity's shape)


def _right_noise(key, noise_left, disparity, warp):
    """[S, B, ...] right-view step noise: the left noise warped, fresh noise in the holes
    (``warp`` True) or the left noise itself."""
    s, b = noise_left.shape[:2]
    flat = noise_left.reshape((s * b,) + noise_left.shape[2:])
    d = jnp.broadcast_to(disparity[None], (s,) + disparity.shape).reshape((s * b,) + disparity.shape[1:])
    warped, holes = forward_warp(flat, d)
    fresh = jax.random.normal(key, flat.shape, flat.dtype)
    warped = jnp.where(holes[..., None], fresh, warped).reshape(noise_left.shape)
    return jnp.where(warp, warped, noise_left)


def _sigma_ratio(plan: DDIMPlan, step):
    """sigma_t / sigma_{t+1} of the released code: this step's sigma over the previous
    (noisier) step's; 1 at the first step or when that sigma is 0."""
    prev = plan.sigma[jnp.maximum(step - 1, 0)]
    ok = (step > 0) & (prev > 0)
    return jnp.where(ok, plan.sigma[step] / jnp.where(ok, prev, 1.0), 1.0)


def stereocrafter_zero_sample(denoise_fn: StereoDenoiseFn, x_T, disparity, plan: DDIMPlan, key,
                              config: StereoCrafterZeroConfig = StereoCrafterZeroConfig(),
                              prediction_type: str = "v_prediction") -> StereoOutput:
    """Sample a stereo pair: the left view from ``x_T``, the right view by warping.

    denoise_fn: stereo denoiser (``szero_jax.stereo.common``), called on ``[left; right]``.
    x_T: [B, T, H, W, C] (or [B, H, W, C]) left initial noise. disparity: x_T's shape without
    channels, in latent pixels (positive = moves left in the right view). key: all of the
    sampler's randomness (step noise, fixed restart noise eps', hole noise, each refinement
    round's noise). Traceable:
    jit the caller with the network params as arguments. prediction_type default: DynamiCrafter
    is a v-model (docs/references.md).
    """
    return stereocrafter_zero_run(denoise_fn, x_T, disparity, plan, key,
                                  build_events(config, plan.num_steps), prediction_type)


# fold_in data of the refinement-noise stream: far from split(key, 3)'s counters 0..2, which
# fold_in(key, i) would reproduce (partitionable threefry).
_REFINE_NOISE_STREAM = 0x52454631


class _Carry(NamedTuple):
    """What one event hands the next (``lax.scan`` carry)."""
    x_l: jax.Array           # left view's latent: the input of its next sampling step
    left_store: jax.Array    # [K, ...] left inputs of the window steps (round 0), replayed
                             # by the later restart rounds
    right_store: jax.Array   # [K, ...] Eq. 2 fills: where the next restart round starts
                             # each window step's holes
    last_out: jax.Array      # right output of the previous evaluation
    prev_in: jax.Array       # right input of the previous evaluation (Eq. 4 keeps it
                             # outside the holes)
    prev_l_in: jax.Array     # left input of the previous evaluation (a refinement round
                             # re-evaluates the same step)
    holes: jax.Array         # bool, holes of the last warp (disparity's shape)
    refine_round: jax.Array  # int32 j of the current refinement round (0 on other events):
                             # picks the round's own noise


def stereocrafter_zero_run(denoise_fn: StereoDenoiseFn, x_T, disparity, plan: DDIMPlan, key,
                           events: StereoEvents, prediction_type: str = "v_prediction"
                           ) -> StereoOutput:
    """``stereocrafter_zero_sample`` with the schedule given as data (``build_events``)."""
    check_prediction_type(prediction_type)
    check_latent_and_disparity(x_T, disparity)
    ev = jax.tree.map(jnp.asarray, events)
    if isinstance(events.step, np.ndarray) and events.step.max() >= plan.num_steps:
        raise ValueError(f"events were built for more steps than the plan's {plan.num_steps}")
    k = ev.window.shape[0]
    k_step, k_fixed, k_holes = jax.random.split(key, 3)
    k_refine = jax.random.fold_in(key, _REFINE_NOISE_STREAM)
    # Step noise, one draw per step: every restart round replays it (released: re-seeded).
    noise_l = jax.random.normal(k_step, (plan.num_steps,) + x_T.shape, x_T.dtype)
    noise_r = _right_noise(k_holes, noise_l, disparity, ev.warp_noise)
    fixed_eps = jax.random.normal(k_fixed, (k,) + x_T.shape, x_T.dtype)  # eps'_t, drawn once
    border_w = ev.border_weight
    warped_d = warped_disparity(disparity)       # background_fill's key, fixed for the run

    def bcast(mask):
        return mask[..., None]

    def ratio_at(step, on):
        return jnp.where(on, _sigma_ratio(plan, step), 1.0)

    def round_noise(step, j, holes):
        """Refinement round j of ``step``: its own draw (keyed by (step, j), so padding the
        schedule leaves it unchanged) in the holes, or everywhere (``refine_noise_all``)."""
        k_l, k_h = jax.random.split(jax.random.fold_in(jax.random.fold_in(k_refine, step), j))
        z_l = jax.random.normal(k_l, x_T.shape, x_T.dtype)
        z_r = _right_noise(k_h, z_l[None], disparity, ev.warp_noise)[0]
        z_r = jnp.where(bcast(holes) | ev.refine_noise_all, z_r, noise_r[step])
        return join_views(jnp.where(ev.refine_noise_all, z_l, noise_l[step]), z_r)

    def step_noise(step, j, holes):
        return join_views(noise_l[step], noise_r[step])

    def body(c: _Carry, e):
        p = plan_at(plan, e.step)
        # Refinement re-evaluates the step: the left input is the previous event's.
        x_l_in = jnp.where(e.restart & ~e.round0, c.left_store[e.slot],
                           jnp.where(e.refine, c.prev_l_in, c.x_l))

        def warped_input():
            warped, h = forward_warp(x_l_in, disparity)
            from_left = jax.lax.cond(ev.fill_background,      # only the chosen one runs
                                     lambda: background_fill(warped, h, warped_d),
                                     lambda: x_l_in)
            first = jnp.where(e.fill_left, from_left, c.last_out)
            fill = jnp.where(e.round0, first, c.right_store[e.slot])
            m_border = bcast(border_mask(h)) & e.restart   # Eq. 3
            fill = jnp.where(m_border, border_w * x_l_in + (1.0 - border_w) * fill, fill)
            fill = jnp.where(e.restart, fill, c.last_out)
            return jnp.where(bcast(h), fill, warped), h

        def kept_input():
            ratio = ratio_at(e.step, ev.refine_sigma_ratio)
            refined = jnp.where(bcast(c.holes), ratio * c.last_out, c.prev_in)   # Eq. 4
            return jnp.where(e.refine, refined, c.last_out), c.holes

        x_r_in, holes = jax.lax.cond(e.warp, warped_input, kept_input)
        x_in = join_views(x_l_in, x_r_in)
        t = jnp.broadcast_to(p.timesteps, (x_in.shape[0],))
        out = denoise_fn(x_in, t, p, e.mode)
        j = jnp.where(e.refine, c.refine_round + 1, 0)
        noise = jax.lax.cond(e.refine, round_noise, step_noise, e.step, j, holes)
        x_prev, _ = ddim_step(p, x_in, out, noise, prediction_type)
        out_l, out_r = split_views(x_prev)

        # Eq. 2: the fill the next round uses at this window step.
        a = jnp.sqrt(p.alpha_bar)
        scale = (1.0 - a) * ratio_at(e.step, ev.restart_sigma_ratio)
        restarted = out_r * scale + p.sigma * fixed_eps[e.slot] * a
        right_store = c.right_store.at[e.slot].set(
            jnp.where(e.restart, restarted, c.right_store[e.slot]))
        left_store = c.left_store.at[e.slot].set(
            jnp.where(e.restart & e.round0, x_l_in, c.left_store[e.slot]))
        x_l = jnp.where(e.advance_left, out_l, c.x_l)
        return _Carry(x_l, left_store, right_store, out_r, x_r_in, x_l_in, holes, j), None

    stores = jnp.zeros((k,) + x_T.shape, x_T.dtype)
    init = _Carry(x_l=x_T, left_store=stores, right_store=stores, last_out=x_T, prev_in=x_T,
                  prev_l_in=x_T, holes=jnp.zeros(disparity.shape, bool),
                  refine_round=jnp.int32(0))
    per_event = {f: getattr(ev, f) for f in _PER_EVENT}
    final, _ = jax.lax.scan(lambda c, e: body(c, _Event(**e)), init, per_event)
    return StereoOutput(final.x_l, final.last_out, final.holes)
