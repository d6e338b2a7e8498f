"""Trains the tiny model family (szero_jax/tiny.py) on the procedural stereo world.

    python -m experiments.train_tiny --stage all --work_dir /tmp/tiny_work

Stages, in dependency order: vae -> clip (text + image encoders) -> video (DynamiCrafter
UNet + Resampler, CLIP frozen) -> depth (DepthCrafter UNet; VAE and image encoder frozen)
-> eval (held-out metrics JSON and the sample grid, experiments/eval_tiny.py). Fine-tuning
stages (FINE_TUNE_STAGES, never in "all", need --init_from): vae_decoder trains the VAE
decoder alone (encoder params untouched, so every latent and the models trained on them stay
valid) on whole frames, logging the held-out VAE measure at each checkpoint; vae_joint trains
the whole VAE on whole frames (a new latent space: the UNets must follow). Extra stages
(EXTRA_STAGES, never in "all") add a network to the family in --output_dir: sd trains the
tiny Stable Diffusion UNet on single frames + captions with the family's frozen VAE and text
encoder, logging a held-out eps-loss at each checkpoint; sd_depth fine-tunes it into the SD 2
depth variant (a fifth input channel: the frame's depth map). World clips
(training seeds 0..num_clips-1 only) are rendered once into a cache in --work_dir. Each
stage's optax state is checkpointed with orbax in --work_dir/state_<stage>; --resume
continues from it. Finished networks are written with `save_params` to --output_dir/<name>/.
Here the shared --steps counts training steps per stage run (default: DEFAULT_STEPS).

Importable: ``train(TrainConfig(...))`` runs the stages of a config; ``main`` only builds
the config from the flags.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import app, flags, logging

from experiments import common_flags as cf
from experiments import eval_tiny
from szero_jax import checkpoints, tiny, world
from szero_jax.diffusion import (SVD_SIGMA_MAX, SVD_SIGMA_MIN, dynamicrafter_schedule,
                                 stable_diffusion_schedule)
from szero_jax.geometry import minmax_signed
from szero_jax.io.atomic import atomic_output
from szero_jax.metrics import lpips
from szero_jax.models.clip import CLIPTextEncoder, CLIPVisionEncoder, preprocess_image
from szero_jax.models.resampler import Resampler
from szero_jax.models.unet2d import UNet2DCondition
from szero_jax.models.unet3d import UNet3D
from szero_jax.models.unet_st import UNetSpatioTemporal
from szero_jax.models.vae import AutoencoderKL
from szero_jax.pipelines.bundles import Net, load_video_models
from szero_jax.pipelines.conditioning import encode_latents, image_tokens, text_embedding
from szero_jax.pipelines.config import check_int
from szero_jax.pipelines.image import sd_depth_condition

STAGES = ("vae", "clip", "video", "depth", "eval")
FINE_TUNE_STAGES = ("vae_decoder", "vae_joint")  # start from --init_from; not part of "all"
# Stages that add a network to a trained family (its vae / text_encoder in output_dir), not
# part of "all": sd trains the tiny Stable Diffusion UNet, sd_depth its SD 2 depth variant
# (from output_dir's sd_unet).
EXTRA_STAGES = ("sd", "sd_depth")
ALL_STAGES = STAGES + FINE_TUNE_STAGES + EXTRA_STAGES
# The shipped totals (MODEL_CARD.md); vae_decoder: the candidate's run ("Decoder fine-tune").
DEFAULT_STEPS = {"vae": 1400, "clip": 150, "video": 1600, "depth": 600, "vae_decoder": 4000,
                 "vae_joint": 4000,
                 "sd": 3000, "sd_depth": 2000}
DEFAULT_BATCH = {"vae": 16, "clip": 64, "video": 4, "depth": 4, "vae_decoder": 8, "vae_joint": 8, "sd": 16,
                 "sd_depth": 16}
# vae_decoder: half the from-scratch rate, as it starts from a trained decoder (project choice).
LR = {"vae": 1e-3, "clip": 1e-3, "video": 1e-3, "depth": 1e-3, "vae_decoder": 5e-4, "vae_joint": 5e-4, "sd": 1e-3,
      "sd_depth": 5e-4}  # sd_depth starts from the trained sd_unet: half its rate (project choice)
VAE_CROP = 32  # the VAE is convolutional: train on crops, evaluate on whole frames
KL_WEIGHT = 1e-6  # ldm models/first_stage_models/kl-f*/config.yaml kl_weight
DEPTH_FRACTION = 0.25  # share of VAE batches that are disparity maps (the depth model's input)
UNCOND_PROB = 0.05  # DynamiCrafter training_512_v1.0 config: text dropped < 2p, image in [p, 3p)
LOGIT_SCALE_INIT = float(np.log(1 / 0.07))  # CLIP (Radford et al. 2021) temperature init
LOGIT_SCALE_MAX = float(np.log(100.0))  # CLIP clips the logit scale at 100
# EDM log-normal training sigmas, shifted to high noise as in SVD fine-tuning (P_mean 0.7,
# P_std 1.6: SVD_Xtend train_svd.py, after Blattmann et al. 2023 Sec. D).
P_MEAN, P_STD = 0.7, 1.6
# Deviation: a share of log-uniform sigmas over SVD-xt's whole sampling range (0.002-700), so
# the few-step Karras sampler's first steps are in the training range.
SIGMA_UNIFORM_SHARE = 0.2
DEPTH_UNCOND_PROB = 0.1  # both conditions zeroed: the unconditional half of DepthCrafter's CFG
# SD 1.x fine-tuning dropped the caption 10 % of the time (sd-v1-5 model card: "10% dropping
# of the text-conditioning to improve classifier-free guidance sampling").
SD_UNCOND_PROB = 0.1
SD_EVAL_FRAMES = (0, 7)  # frames of each held-out clip in the held-out eps-loss
SD_EVAL_T = (50, 250, 500, 750, 950)  # its timesteps (fixed noise): the curve is comparable
# Decoder fine-tune loss L1 + LPIPS_WEIGHT x LPIPS (AlexNet): stabilityai/sd-vae-ft-mse's
# decoder-only fine-tune weight 0.1 (its README; ft-EMA's 1.0 gave 0.7 dB lower COCO PSNR).
LPIPS_WEIGHT = 0.1
BUDGET_PROBE = 20  # steps timed (after the compiling one) to fit a budgeted schedule
ENCODE_FRAMES = 64  # frames per VAE call when encoding the training clips (memory bound)
F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: which stages, how long, on which clips, where things go."""
    stage: str = "all"                 # one of ALL_STAGES, or "all" (STAGES in order)
    steps: Optional[int] = None        # steps of each stage run; None: DEFAULT_STEPS
    batch_size: Optional[int] = None   # None: DEFAULT_BATCH of the stage
    height: int = tiny.HEIGHT          # clip size (the shipped family: tiny.HEIGHT x WIDTH)
    width: int = tiny.WIDTH
    frames: int = tiny.FRAMES          # frames per training clip of the video / depth models
    num_clips: int = 400               # training clips (seeds 0..num_clips-1), 2x frames each
    latent_clips: int = 200            # clips the video and depth models train on
    num_eval: int = 16                 # held-out clips of the eval stage
    output_dir: str = str(checkpoints.TINY_DIR)  # where the trained networks go
    work_dir: str = "/tmp/szero_tiny_work"       # clip cache and resumable train state
    docs_dir: str = "docs"             # where eval writes tiny_samples.png
    resume: bool = False               # continue each stage from its saved train state
    init_from: Optional[str] = None    # fine-tune video / depth / vae_decoder from this family
    decoder_channels: Optional[tuple] = None  # vae_decoder: a fresh decoder of these widths
    log_every: int = 25                # log the mean loss every this many steps
    save_every: int = 200              # checkpoint the train state every this many steps
    seed: int = 0                      # initialisation, batches and noise
    time_budget_s: Optional[float] = None  # wall seconds per stage run: the schedule is
                                           # fitted to the measured rate, the run stops there
    workers: int = 1                   # processes rendering the clip cache

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES if self.stage == "all" else (self.stage,)

    def steps_for(self, stage: str) -> int:
        return DEFAULT_STEPS[stage] if self.steps is None else self.steps

    def batch_for(self, stage: str) -> int:
        return DEFAULT_BATCH[stage] if self.batch_size is None else self.batch_size

    def validate(self) -> "TrainConfig":
        owner = "TrainConfig"
        if self.stage not in ALL_STAGES + ("all",):
            raise ValueError(f"stage: expected one of {ALL_STAGES + ('all',)}, got {self.stage!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) is not None:
                check_int(owner, name, getattr(self, name), 1)
        for name in ("height", "width"):     # VAE crops; 4x VAE then the UNet's 2x level
            if check_int(owner, name, getattr(self, name), VAE_CROP) % 8:
                raise ValueError(f"{name}: expected a multiple of 8, got {getattr(self, name)}")
        check_int(owner, "frames", self.frames, 1)
        check_int(owner, "num_clips", self.num_clips, 1, world.HELDOUT_SEED_START)
        check_int(owner, "latent_clips", self.latent_clips, 1, self.num_clips)
        if "clip" in self.stages:            # contrastive batches draw distinct clips
            check_int(owner, "batch_size", self.batch_for("clip"), 1, self.num_clips)
        for name in ("num_eval", "log_every", "save_every"):
            check_int(owner, name, getattr(self, name), 1)
        check_int(owner, "seed", self.seed, 0)
        check_int(owner, "workers", self.workers, 1)
        if self.time_budget_s is not None and not (isinstance(self.time_budget_s, (int, float))
                                                   and self.time_budget_s > 0):
            raise ValueError(f"time_budget_s: expected a positive number of seconds or None, "
                             f"got {self.time_budget_s!r}")
        for name in ("output_dir", "work_dir", "docs_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}: expected a folder name, got {getattr(self, name)!r}")
        if self.init_from is not None and not Path(self.init_from).is_dir():
            raise ValueError(f"init_from: expected a tiny-family folder, {self.init_from!r} "
                             "is not one")
        if self.decoder_channels is not None and (
                self.stage != "vae_decoder" or not self.decoder_channels
                or not all(isinstance(c, int) and c > 0 for c in self.decoder_channels)):
            raise ValueError("decoder_channels: expected positive ints with --stage vae_decoder, "
                             f"got {self.decoder_channels!r} with stage {self.stage!r}")
        if self.stage in FINE_TUNE_STAGES and self.init_from is None:
            raise ValueError(f"init_from: the {self.stage} stage fine-tunes a trained family; "
                             "expected its folder, got None")
        return self


_T = TrainConfig()
flags.DEFINE_enum("stage", _T.stage, ALL_STAGES + ("all",),
                  "Stage to run ('all': every stage of STAGES in order).")
flags.DEFINE_integer("batch_size", _T.batch_size, "Batch size (default: DEFAULT_BATCH per stage).")
flags.DEFINE_integer("num_clips", _T.num_clips, "Training clips (seeds 0..num_clips-1), 2x frames each.")
flags.DEFINE_integer("latent_clips", _T.latent_clips, "Clips the video and depth models train on.")
flags.DEFINE_integer("num_eval", _T.num_eval, "Held-out clips (seeds from HELDOUT_SEED_START) for eval.")
flags.DEFINE_string("work_dir", _T.work_dir, "Clip cache and resumable train state.")
flags.DEFINE_string("docs_dir", _T.docs_dir, "Where eval writes tiny_samples.png.")
flags.DEFINE_string("init_from", _T.init_from, "Fine-tune: start the video/depth stages from the "
                    "networks in this tiny-family directory (e.g. the shipped one, at a new "
                    "resolution) instead of a fresh initialisation; vae_decoder needs it.")
flags.DEFINE_list("decoder_channels", None, "vae_decoder: train a fresh decoder of these widths "
                  "(one per level, e.g. 32,64,128) on the frozen encoder's latents instead of "
                  "fine-tuning init_from's decoder.")
flags.DEFINE_integer("log_every", _T.log_every, "Log the mean loss every this many steps.")
flags.DEFINE_integer("save_every", _T.save_every, "Checkpoint the train state every this many steps.")
flags.DEFINE_float("time_budget_s", _T.time_budget_s, "Wall seconds per stage run: the cosine "
                   "schedule is shortened to the steps the measured rate fits, and the run stops "
                   "there (a GPU lease's minutes; default: none, run --steps).")
flags.DEFINE_integer("workers", _T.workers, "Processes rendering the clip cache.")
cf.declare(__name__, "steps", "seed", "output_dir", "height", "width", "frames", "resume")
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------- data
def _render_clip(seed: int, h: int, w: int, frames: int):
    assert seed < world.HELDOUT_SEED_START
    s = world.make_scene(seed, h, w, frames)
    return np.round(s.left * 255).astype(np.uint8), s.disparity.astype(np.float32), s.caption


def clip_cache(work_dir: Path, n: int, h: int, w: int, frames: int, workers: int = 1) -> dict:
    """Training clips of 2*frames frames, rendered once (by ``workers`` processes): frames
    uint8, disparity, tokens."""
    path = work_dir / f"clips_{n}_{h}x{w}x{2 * frames}.npz"
    if path.exists():
        return dict(np.load(path))
    logging.info("rendering %d training clips (%dx%d, %d frames, %d workers) into %s", n, h, w,
                 2 * frames, workers, path)
    t0 = time.time()
    render = functools.partial(_render_clip, h=h, w=w, frames=2 * frames)
    if workers > 1:     # spawned: the parent holds JAX's threads, which fork would copy
        import multiprocessing  # pylint: disable=import-outside-toplevel
        from concurrent.futures import ProcessPoolExecutor  # pylint: disable=import-outside-toplevel
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            clips = list(ex.map(render, range(n), chunksize=max(1, n // (4 * workers))))
    else:
        clips = [render(seed) for seed in range(n)]
    logging.info("  rendered in %.0f s", time.time() - t0)
    video, disp, captions = zip(*clips)
    data = dict(video=np.stack(video), disparity=np.stack(disp),
                tokens=tiny.tokenizer()(list(captions)))
    work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        np.savez(tmp, **data)
    return data


def to_signed(video_u8):
    return video_u8.astype(np.float32) / 127.5 - 1.0


def normalise_disparity(disp):
    """Per-clip min-max to [-1, 1] over [..., T, H, W] (DepthCrafter's disparity target)."""
    return np.asarray(minmax_signed(disp, axes=(-3, -2, -1)))


def gray3(x):
    return np.repeat(x[..., None], 3, axis=-1)


# ----------------------------------------------------------------------------- training loop
def lr_schedule(stage: str, steps: int):
    """Warmup + cosine decay to 5 % of the stage's peak over ``steps`` (host-side: the step
    function takes the rate as an argument, so a budgeted run can fit ``steps`` after it
    started without compiling again)."""
    return optax.warmup_cosine_decay_schedule(0.0, LR[stage], min(100, steps // 10 + 1), steps,
                                              LR[stage] * 0.05)


def budgeted_steps(done_to: int, steps: int, rate: float, elapsed: float, budget: float) -> int:
    """The schedule's length at step ``done_to``, ``elapsed`` seconds into a ``budget``, at
    ``rate`` steps/s: what the rest of the budget fits (90 % of it: checkpoints and
    monitoring also take time), at least ``done_to``, at most ``steps``."""
    return int(min(steps, done_to + max(0.0, 0.9 * rate * (budget - elapsed))))


def fit(config: TrainConfig, stage: str, params, loss_fn, batch_fn, frozen, on_save=None):
    """Generic loop: AdamW with warmup + cosine decay, grad clipping, orbax train state.

    ``loss_fn(params, frozen, batch, key) -> (loss, aux)``; ``batch_fn(rng) -> batch``;
    ``on_save(step, params)``, if given, runs at the start and after every checkpoint
    (held-out monitoring). With ``config.time_budget_s`` the run measures its rate over its
    first BUDGET_PROBE steps after the compiling one and shortens the schedule to what the
    budget fits (stored in the train state, so --resume keeps it), and stops at the budget
    in any case. Returns the trained params and the report written to
    ``work_dir/train_<stage>.json``.
    """
    steps, work_dir = config.steps_for(stage), Path(config.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # adamw at rate 1, its update scaled by the step's rate: adamw's own (decoupled weight
    # decay included) with the rate as a traced argument
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1.0, weight_decay=1e-4))
    # "fitted": the schedule's length a budgeted run chose (0: --steps), kept on resume
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
             "fitted": jnp.zeros((), jnp.int32)}
    mngr = ocp.CheckpointManager((work_dir / f"state_{stage}").resolve(),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    if config.resume and mngr.latest_step() is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(abstract))
        logging.info("[%s] resumed at step %d", stage, int(state["step"]))

    @jax.jit
    def step_fn(params, opt_state, frozen, batch, key, rate):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * rate.astype(u.dtype), updates)
        return optax.apply_updates(params, updates), opt_state, loss, aux

    params, opt_state = state["params"], state["opt_state"]
    start = int(state["step"])
    fitted = int(state["fitted"])
    total = fitted or steps
    schedule = lr_schedule(stage, total)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    logging.info("[%s] %.2fM trainable params, steps %d..%d", stage, n_params / 1e6, start, total)
    if on_save is not None:
        on_save(start, params)
    window, t0, history, t_probe = [], time.time(), [], None
    budget = config.time_budget_s
    step = start
    while step < total:
        rng = np.random.default_rng([config.seed, ALL_STAGES.index(stage), step])
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
        params, opt_state, loss, aux = step_fn(params, opt_state, frozen, batch_fn(rng), key,
                                               jnp.float32(schedule(step)))
        window.append(float(loss))
        step += 1
        if budget is not None and step == start + 1:
            t_probe = time.time()                  # after the compiling step
        if budget is not None and not fitted and step == start + 1 + BUDGET_PROBE:
            probe_rate = BUDGET_PROBE / (time.time() - t_probe)
            fit_to = budgeted_steps(step, total, probe_rate, time.time() - t0, budget)
            if fit_to < total:
                logging.info("[%s] %.2f steps/s: the %.0f s budget fits %d of %d steps", stage,
                             probe_rate, budget, fit_to, total)
                total = fitted = fit_to
                schedule = lr_schedule(stage, total)
        over = budget is not None and time.time() - t0 > budget and step < total
        if step % config.log_every == 0 or step == total or over:
            rate = (step - start) / (time.time() - t0)
            extra = " ".join(f"{k} {float(v):.4f}" for k, v in aux.items())
            logging.info("[%s] step %d/%d loss %.5f %s | %.2f steps/s, eta %.0f s", stage, step,
                         total, np.mean(window), extra, rate, (total - step) / rate)
            history.append([step, float(np.mean(window))])
            window = []
        if step % config.save_every == 0 or step == total or over:
            mngr.save(step, args=ocp.args.StandardSave(
                {"params": params, "opt_state": opt_state, "step": jnp.asarray(step, jnp.int32),
                 "fitted": jnp.asarray(fitted, jnp.int32)}))
            if on_save is not None:
                on_save(step, params)
        if over:
            logging.warning("[%s] stopped at step %d of %d: the %.0f s budget is spent "
                            "(--resume continues the schedule)", stage, step, total, budget)
            break
    mngr.wait_until_finished()
    report = {"steps": total, "wall_s": time.time() - t0, "resumed_at": start,
              "stopped_at": step if step < total else None,   # < total: the budget ran out
              "final_loss": history[-1][1] if history else None, "history": history}
    with atomic_output(work_dir / f"train_{stage}.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return params, report


def save(config: TrainConfig, name, params, net_config):
    path = Path(config.output_dir) / name
    checkpoints.save_params(path, params, net_config, tiny.FAMILIES[name], overwrite=True)
    logging.info("saved %s", path)


def initial(config: TrainConfig, name):
    """Fine-tuning start: ``name``'s params from the ``init_from`` tiny family."""
    logging.info("starting %s from %s", name, Path(config.init_from) / name)
    return checkpoints.load_params(Path(config.init_from) / name, tiny.FAMILIES[name])[0]


def load(config: TrainConfig, name):
    return checkpoints.load_params(Path(config.output_dir) / name, tiny.FAMILIES[name])


# ----------------------------------------------------------------------------- VAE
def vae_loss(model):
    def loss_fn(params, frozen, batch, key):
        mean, logvar = model.apply(params, batch, method="encode")
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        rec = model.apply(params, z, method="decode")
        l1, mse = jnp.mean(jnp.abs(rec - batch)), jnp.mean((rec - batch) ** 2)
        kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar) / batch.size
        return l1 + mse + KL_WEIGHT * kl, {"psnr": 10 * jnp.log10(4.0 / mse)}
    return loss_fn


def latent_scaling(model, params, video_u8) -> float:
    """scaling_factor = 1 / std of the training latents (how SD's 0.18215 was chosen), over
    every 4th frame of the first 64 clips."""
    enc = jax.jit(lambda p, x: model.apply(p, x, method="encode")[0])
    sample = to_signed(video_u8[:64:4].reshape((-1,) + video_u8.shape[2:]))
    z = np.concatenate([np.asarray(enc(params, sample[k:k + 32])) for k in range(0, len(sample), 32)])
    logging.info("VAE latent std %.4f", z.std())
    return float(1.0 / z.std())


def stage_vae(config: TrainConfig, data):
    model, cfg = AutoencoderKL(tiny.VAE), tiny.VAE
    bs = config.batch_for("vae")
    video, disp = data["video"], data["disparity"]
    n, t, h, w = disp.shape

    def batch_fn(rng):
        i, f = rng.integers(n, size=bs), rng.integers(t, size=bs)
        y, x = rng.integers(h - VAE_CROP + 1, size=bs), rng.integers(w - VAE_CROP + 1, size=bs)
        out = np.empty((bs, VAE_CROP, VAE_CROP, 3), np.float32)
        for k in range(bs):
            sl = (i[k], f[k], slice(y[k], y[k] + VAE_CROP), slice(x[k], x[k] + VAE_CROP))
            if rng.random() < DEPTH_FRACTION:
                out[k] = gray3(normalise_disparity(disp[i[k]])[sl[1:]])
            else:
                out[k] = to_signed(video[sl])
        return out

    params = jax.jit(model.init)(jax.random.PRNGKey(config.seed), jnp.zeros((1, VAE_CROP, VAE_CROP, 3)))
    params, report = fit(config, "vae", params, vae_loss(model), batch_fn, None)
    cfg = dataclasses.replace(cfg, scaling_factor=latent_scaling(model, params, video))
    logging.info("VAE scaling_factor %.4f", cfg.scaling_factor)
    save(config, "vae", params, cfg)
    return report


# ----------------------------------------------------------------------------- CLIP
def clip_image_input(frames):
    """World frames in [-1, 1] [B, H, W, 3] -> tiny CLIP input."""
    return preprocess_image(frames, size=tiny.CLIP_IMAGE_SIZE)


def stage_clip(config: TrainConfig, data):
    text_m, vis_m = CLIPTextEncoder(tiny.TEXT), CLIPVisionEncoder(tiny.VISION)
    bs = config.batch_for("clip")
    video, tokens = data["video"], data["tokens"]
    n, t = video.shape[:2]
    k1, k2 = jax.random.split(jax.random.PRNGKey(config.seed + 1))
    params = {"text": jax.jit(text_m.init)(k1, jnp.asarray(tokens[:1])),
              "vision": jax.jit(vis_m.init)(k2, jnp.zeros((1, tiny.CLIP_IMAGE_SIZE, tiny.CLIP_IMAGE_SIZE, 3))),
              "logit_scale": jnp.asarray(LOGIT_SCALE_INIT)}

    def batch_fn(rng):
        i = rng.choice(n, size=bs, replace=False)
        return {"image": to_signed(video[i, rng.integers(t, size=bs)]), "tokens": tokens[i]}

    def loss_fn(params, frozen, batch, key):
        txt = text_m.apply(params["text"], batch["tokens"])[2]
        img = vis_m.apply(params["vision"], clip_image_input(batch["image"]))[1]
        txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
        img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
        logits = jnp.exp(jnp.minimum(params["logit_scale"], LOGIT_SCALE_MAX)) * img @ txt.T
        labels = jnp.arange(logits.shape[0])
        ce = lambda lg: optax.softmax_cross_entropy_with_integer_labels(lg, labels).mean()
        acc = jnp.mean(jnp.argmax(logits, axis=1) == labels)
        return 0.5 * (ce(logits) + ce(logits.T)), {"acc": acc}

    params, report = fit(config, "clip", params, loss_fn, batch_fn, None)
    save(config, "text_encoder", params["text"], tiny.TEXT)
    save(config, "image_encoder", params["vision"], tiny.VISION)
    return report


# ----------------------------------------------------------------------------- shared encoders
def encode_frames(vae_params, vae_cfg, video_u8):
    """Unscaled VAE posterior means of uint8 clips [N, T, H, W, 3] -> [N, T, h, w, 4]: the
    stages' encoder (``conditioning.encode_latents``), ENCODE_FRAMES frames per call."""
    enc = jax.jit(functools.partial(encode_latents, vae_cfg, F32, scale=1.0))
    per_call = max(1, ENCODE_FRAMES // video_u8.shape[1])
    return np.concatenate([np.asarray(enc(vae_params["params"], to_signed(video_u8[k:k + per_call])))
                           for k in range(0, len(video_u8), per_call)])


def cached_latents(config: TrainConfig, name, fn, vae_dir=None):
    """``fn()`` computed once per VAE checkpoint (``vae_dir``, default output_dir/vae) and
    kept in work_dir (the VAE, or its encoder, is frozen)."""
    path = Path(config.work_dir) / f"latents_{name}.npy"
    vae_config = Path(vae_dir or Path(config.output_dir) / "vae") / "config.json"
    if path.exists() and path.stat().st_mtime > vae_config.stat().st_mtime:
        return np.load(path)
    logging.info("encoding %s with the VAE", name)
    z = fn()
    with atomic_output(path) as tmp:
        np.save(tmp, z)
    return z


def video_latents(config: TrainConfig, vae_params, vae_cfg, video_u8):
    """Unscaled latents of the training clips, cached (shared by the video and depth stages)."""
    h, w = video_u8.shape[2:4]
    return cached_latents(config, f"video_{len(video_u8)}_{h}x{w}",
                          lambda: encode_frames(vae_params, vae_cfg, video_u8))


def encode_disparity(vae_params, vae_cfg, disp):
    """DepthCrafter's depth latents: per-clip normalised disparity, 3 channels, VAE mean."""
    u8 = np.round((gray3(normalise_disparity(disp)) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return encode_frames(vae_params, vae_cfg, u8) * vae_cfg.scaling_factor


def null_text(text_params):
    """Penultimate text tokens of the empty prompt (DynamiCrafter's unconditional context)."""
    return text_embedding(tiny.TEXT, F32, text_params["params"],
                          jnp.asarray(tiny.tokenizer()([""])))


def video_context(params, frozen, tokens, image, text_drop=None, image_drop=None):
    """The training side of ``stages.context`` (same embeddings: penultimate text tokens +
    Resampler(CLIP image tokens), 16 per frame), on token batches, with DynamiCrafter's
    condition dropping; gradients reach the Resampler only."""
    text = text_embedding(tiny.TEXT, F32, frozen["text"]["params"], tokens)
    if text_drop is not None:
        text = jnp.where(text_drop[:, None, None], frozen["null_text"], text)
        image = jnp.where(image_drop[:, None, None, None], 0.0, image)
    img_tok = image_tokens(tiny.VISION, tiny.RESAMPLER, F32, frozen["vision"]["params"],
                           params["resampler"]["params"], image)
    return jax.lax.stop_gradient(text), img_tok


# ----------------------------------------------------------------------------- VAE decoder
ENCODER_KEYS = ("encoder", "quant_conv")  # the VAE params that make the latent; frozen


def split_vae_params(vae_params):
    """{"params": ...} of the VAE -> (decoder side: trained, encoder side: frozen)."""
    inner = vae_params["params"]
    return ({k: v for k, v in inner.items() if k not in ENCODER_KEYS},
            {k: v for k, v in inner.items() if k in ENCODER_KEYS})


def vae_decoder_loss(model, lpips_weight=LPIPS_WEIGHT):
    """L1 + lpips_weight x LPIPS (AlexNet) of the decoded latents against the frames, both in
    [-1, 1]; ``frozen`` holds the encoder side (unused by ``decode``, kept for the full tree)."""
    def loss_fn(params, frozen, batch, key):
        rec = model.apply({"params": {**frozen, **params}}, batch["z"], method="decode")
        target = batch["target"]
        l1 = jnp.mean(jnp.abs(rec - target))
        perceptual = jnp.mean(lpips((rec + 1.0) / 2.0, (target + 1.0) / 2.0))
        mse = jnp.mean((jnp.clip(rec, -1, 1) - target) ** 2)
        return l1 + lpips_weight * perceptual, {"lpips": perceptual,
                                                "psnr": 10 * jnp.log10(4.0 / mse)}
    return loss_fn


def heldout_vae_monitor(config: TrainConfig, vae_cfg, encoder_side, stage="vae_decoder"):
    """``on_save(step, params)``: the eval stage's VAE measure (``eval_tiny.eval_vae``:
    num_eval held-out clips, posterior mean) with these params (+ ``encoder_side``), appended
    to work_dir/heldout_<stage>.jsonl with the wall time since this run started."""
    models = load_video_models(config.init_from)
    clips = eval_tiny.HeldOut.render(config.num_eval, config.height, config.width, config.frames)
    path, t0 = Path(config.work_dir) / f"heldout_{stage}.jsonl", time.time()

    def on_save(step, params):
        net = Net(vae_cfg, {**encoder_side, **params})
        m, _ = eval_tiny.eval_vae(dataclasses.replace(models, vae=net), clips)
        row = {"step": step, "run_wall_s": round(time.time() - t0, 1), **m}
        logging.info("[%s] held-out at step %d: %s", stage, step, row)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    return on_save


def stage_vae_decoder(config: TrainConfig, data):
    """Fine-tunes the decoder of init_from's VAE (or trains a fresh one of decoder_channels'
    widths) on whole frames: the posterior-mean latent of a world frame (DEPTH_FRACTION of
    them a clip's min-max disparity map, the depth model's VAE input) -> the frame, with
    ``vae_decoder_loss``. The encoder params and the config (scaling_factor included; only
    decoder_block_out_channels may change) are kept, so every latent stays bit-identical."""
    vae_dir = Path(config.init_from) / "vae"
    vae_params, vae_cfg = checkpoints.load_params(vae_dir, tiny.FAMILIES["vae"])
    model, bs = AutoencoderKL(vae_cfg), config.batch_for("vae_decoder")
    n, t, h, w = data["disparity"].shape
    maps = gray3(np.round((normalise_disparity(data["disparity"]) + 1.0) * 127.5).clip(
        0, 255).astype(np.uint8))  # uint8 like the frames (as encode_disparity rounds them)
    # Posterior means (what stages.encode gives the pipelines and the video/depth stages).
    frames_z = cached_latents(config, f"decoder_frames_{n}_{h}x{w}x{t}",
                              lambda: encode_frames(vae_params, vae_cfg, data["video"]), vae_dir)
    maps_z = cached_latents(config, f"decoder_maps_{n}_{h}x{w}x{t}",
                            lambda: encode_frames(vae_params, vae_cfg, maps), vae_dir)

    def batch_fn(rng):
        i, f = rng.integers(n, size=bs), rng.integers(t, size=bs)
        is_map = rng.random(bs) < DEPTH_FRACTION
        pick = lambda a, b: np.where(is_map.reshape((-1,) + (1,) * (a.ndim - 2)), b[i, f], a[i, f])
        return {"z": pick(frames_z, maps_z), "target": to_signed(pick(data["video"], maps))}

    params, encoder_side = split_vae_params(vae_params)
    if config.decoder_channels:          # same latent interface, a new (wider) decoder
        vae_cfg = dataclasses.replace(vae_cfg, decoder_block_out_channels=tuple(config.decoder_channels))
        model = AutoencoderKL(vae_cfg)
        params = split_vae_params(jax.jit(model.init)(jax.random.PRNGKey(config.seed + 4),
                                                      jnp.zeros((1, VAE_CROP, VAE_CROP, 3))))[0]
    on_save = heldout_vae_monitor(config, vae_cfg, encoder_side)
    params, report = fit(config, "vae_decoder", params, vae_decoder_loss(model), batch_fn,
                         encoder_side, on_save)
    save(config, "vae", {"params": {**encoder_side, **params}}, vae_cfg)
    return report


def vae_joint_loss(model, lpips_weight=LPIPS_WEIGHT):
    """The whole VAE on whole frames: L1 + lpips_weight x LPIPS of the decoded posterior
    sample + KL_WEIGHT x KL (the vae stage's KL; LDM's autoencoder loss, without its GAN)."""
    def loss_fn(params, frozen, batch, key):
        mean, logvar = model.apply(params, batch, method="encode")
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        rec = model.apply(params, z, method="decode")
        perceptual = jnp.mean(lpips((rec + 1.0) / 2.0, (batch + 1.0) / 2.0))
        kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar) / batch.size
        mse = jnp.mean((jnp.clip(rec, -1, 1) - batch) ** 2)
        return (jnp.mean(jnp.abs(rec - batch)) + lpips_weight * perceptual + KL_WEIGHT * kl,
                {"lpips": perceptual, "psnr": 10 * jnp.log10(4.0 / mse)})
    return loss_fn


def stage_vae_joint(config: TrainConfig, data):
    """Fine-tunes init_from's whole VAE, encoder included, on whole frames (DEPTH_FRACTION
    of them disparity maps) with ``vae_joint_loss``, then re-measures ``scaling_factor`` (1 /
    std of the training latents, as the vae stage). The latent space moves, so the video,
    depth and SD models must be retrained on it (issue 15: the decoder alone stalls at
    22 dB because the latent has lost what it needs)."""
    vae_params, vae_cfg = checkpoints.load_params(Path(config.init_from) / "vae",
                                                  tiny.FAMILIES["vae"])
    model, bs = AutoencoderKL(vae_cfg), config.batch_for("vae_joint")
    video, disp = data["video"], data["disparity"]
    n, t = disp.shape[:2]

    def batch_fn(rng):
        i, f = rng.integers(n, size=bs), rng.integers(t, size=bs)
        out = to_signed(video[i, f])
        for k in np.flatnonzero(rng.random(bs) < DEPTH_FRACTION):
            out[k] = gray3(normalise_disparity(disp[i[k]])[f[k]])
        return out

    on_save = heldout_vae_monitor(config, vae_cfg, {}, "vae_joint")
    params, report = fit(config, "vae_joint", vae_params, vae_joint_loss(model), batch_fn, None,
                         lambda step, p: on_save(step, p["params"]))
    save(config, "vae", params, dataclasses.replace(
        vae_cfg, scaling_factor=latent_scaling(model, params, video)))
    return report


# ----------------------------------------------------------------------------- video
def stage_video(config: TrainConfig, data):
    vae_params, vae_cfg = load(config, "vae")
    text_params, _ = load(config, "text_encoder")
    vis_params, _ = load(config, "image_encoder")
    unet = UNet3D(tiny.VIDEO_UNET)
    bs, frames = config.batch_for("video"), config.frames
    video, tokens = data["video"][:config.latent_clips], data["tokens"][:config.latent_clips]
    n, tt, h, w = video.shape[:4]
    latents = video_latents(config, vae_params, vae_cfg, video) * vae_cfg.scaling_factor
    ab = jnp.asarray(dynamicrafter_schedule().alphas_cumprod, jnp.float32)

    def batch_fn(rng):
        i = rng.integers(n, size=bs)
        stride = rng.integers(1, 3, size=bs)  # fs: frame stride 1 or 2
        start = np.array([rng.integers(tt - s * (frames - 1)) for s in stride])
        idx = start[:, None] + stride[:, None] * np.arange(frames)
        return {"z": latents[i[:, None], idx], "image": to_signed(video[i, start]),
                "tokens": tokens[i], "fs": stride.astype(np.float32)}

    def loss_fn(params, frozen, batch, key):
        kt, kn, kd = jax.random.split(key, 3)
        z0, b = batch["z"], batch["z"].shape[0]
        r = jax.random.uniform(kd, (b,))
        text, img = video_context(params, frozen, batch["tokens"], batch["image"],
                                  text_drop=r < 2 * UNCOND_PROB,
                                  image_drop=(r >= UNCOND_PROB) & (r < 3 * UNCOND_PROB))
        t = jax.random.randint(kt, (b,), 0, ab.shape[0])
        a = ab[t][:, None, None, None, None]
        eps = jax.random.normal(kn, z0.shape)
        x_t = jnp.sqrt(a) * z0 + jnp.sqrt(1 - a) * eps
        v = jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * z0
        cond = jnp.repeat(z0[:, :1], z0.shape[1], axis=1)  # first-frame latent on every frame
        out = unet.apply(params["unet"], jnp.concatenate([x_t, cond], -1), t,
                         jnp.concatenate([text, img], 1), batch["fs"])
        return jnp.mean((out - v) ** 2), {}

    frozen = {"text": text_params, "vision": vis_params, "null_text": null_text(text_params)}
    if config.init_from:
        params = {"resampler": initial(config, "resampler"), "unet": initial(config, "video_unet")}
    else:
        k1, k2 = jax.random.split(jax.random.PRNGKey(config.seed + 2))
        b0 = batch_fn(np.random.default_rng(0))
        params = {"resampler": jax.jit(Resampler(tiny.RESAMPLER).init)(k1, jnp.zeros((1, 65, tiny.WIDTH_EMBED)))}
        text, img = jax.jit(video_context)(params, frozen, b0["tokens"][:1], b0["image"][:1])
        params["unet"] = jax.jit(unet.init)(k2, jnp.zeros((1,) + b0["z"].shape[1:-1] + (8,)), jnp.zeros((1,)),
                                            jnp.concatenate([text, img], 1), jnp.ones((1,)))
    params, report = fit(config, "video", params, loss_fn, batch_fn, frozen)
    save(config, "resampler", params["resampler"], tiny.RESAMPLER)
    save(config, "video_unet", params["unet"], dataclasses.replace(tiny.VIDEO, scale_factor=vae_cfg.scaling_factor))
    return report


# ----------------------------------------------------------------------------- depth
def depth_x0(unet, params, x_noisy, sigma, video_z, context):
    """EDM-preconditioned v-prediction (SVD / DepthCrafter): x0 from x = x0 + sigma eps."""
    s = sigma[:, None, None, None, None]
    c_in = 1.0 / jnp.sqrt(s ** 2 + 1)
    out = unet.apply(params, jnp.concatenate([x_noisy * c_in, video_z], -1), 0.25 * jnp.log(sigma),
                     context)
    return out * (-s / jnp.sqrt(s ** 2 + 1)) + x_noisy / (s ** 2 + 1)


def image_embeds(vis_params, video_u8):
    """Projected tiny-CLIP image embedding of every frame: [..., D]."""
    vis = CLIPVisionEncoder(tiny.VISION)
    f = jax.jit(lambda p, x: vis.apply(p, clip_image_input(x))[1])
    flat = video_u8.reshape((-1,) + video_u8.shape[-3:])
    e = np.concatenate([np.asarray(f(vis_params, to_signed(flat[k:k + 128])))
                        for k in range(0, len(flat), 128)])
    return e.reshape(video_u8.shape[:-3] + e.shape[1:])


def stage_depth(config: TrainConfig, data):
    vae_params, vae_cfg = load(config, "vae")
    vis_params, _ = load(config, "image_encoder")
    unet = UNetSpatioTemporal(tiny.DEPTH_UNET)
    bs, frames = config.batch_for("depth"), config.frames
    video, disp = data["video"][:config.latent_clips], data["disparity"][:config.latent_clips]
    n, tt, h, w = video.shape[:4]
    windows = tt // frames  # non-overlapping windows, each normalised on its own
    split = lambda a: a.reshape((n * windows, frames) + a.shape[2:])
    # DepthCrafter's video latents: posterior mode, unscaled (its 0.02 frame noise is omitted).
    video_z = split(video_latents(config, vae_params, vae_cfg, video))
    depth_z = cached_latents(config, f"disparity_{frames}_{h}x{w}",
                             lambda: encode_disparity(vae_params, vae_cfg, split(disp)))
    embeds = split(image_embeds(vis_params, video))

    def batch_fn(rng):
        i = rng.integers(n * windows, size=bs)
        return {"depth": depth_z[i], "video": video_z[i], "embeds": embeds[i]}

    def loss_fn(params, frozen, batch, key):
        ks, ku, kn, kd = jax.random.split(key, 4)
        x0, b = batch["depth"], batch["depth"].shape[0]
        sigma = jnp.where(jax.random.uniform(ku, (b,)) < SIGMA_UNIFORM_SHARE,
                          jnp.exp(jax.random.uniform(ks, (b,), minval=np.log(SVD_SIGMA_MIN),
                                                     maxval=np.log(SVD_SIGMA_MAX))),
                          jnp.exp(P_MEAN + P_STD * jax.random.normal(ks, (b,))))
        x = x0 + sigma[:, None, None, None, None] * jax.random.normal(kn, x0.shape)
        keep = (jax.random.uniform(kd, (b,)) >= DEPTH_UNCOND_PROB)[:, None, None]
        video = batch["video"] * keep[..., None, None]  # CFG: zero latents and zero embeddings
        pred = depth_x0(unet, params, x, sigma, video, batch["embeds"] * keep)
        w = (sigma ** 2 + 1) / sigma ** 2  # EDM weight: plain MSE on the v target
        return jnp.mean(w * jnp.mean((pred - x0) ** 2, axis=(1, 2, 3, 4))), {}

    if config.init_from:
        params = initial(config, "depth_unet")
    else:
        b0 = batch_fn(np.random.default_rng(0))
        params = jax.jit(unet.init)(jax.random.PRNGKey(config.seed + 3), jnp.zeros((1,) + b0["depth"].shape[1:-1] + (8,)),
                                    jnp.zeros((1,)), jnp.asarray(b0["embeds"][:1]))
    params, report = fit(config, "depth", params, loss_fn, batch_fn, None)
    save(config, "depth_unet", params, tiny.DEPTH_UNET)
    return report


# ----------------------------------------------------------------------------- SD
def sd_context(text_params, text_cfg, tokens):
    """SD 1.x's context: the text tower's final-layer tokens (``pipelines.image._text``)."""
    f = jax.jit(lambda p, t: text_embedding(text_cfg, F32, p, t, layer="last"))
    return np.concatenate([np.asarray(f(text_params["params"], jnp.asarray(tokens[k:k + 64])))
                           for k in range(0, len(tokens), 64)])


def sd_loss(unet, alphas_cumprod):
    """SD's objective: eps-MSE at t ~ U{0..999} on the scaled-linear schedule, the caption
    replaced by the empty prompt's context with SD_UNCOND_PROB. ``frozen["null"]`` [1, N, D];
    batch {"z": scaled latents [B, h, w, 4], "context": [B, N, D]} and, for SD 2 depth,
    "depth" [B, h, w, 1] (never dropped: depth2img guides on the text only)."""
    ab = jnp.asarray(alphas_cumprod, F32)

    def loss_fn(params, frozen, batch, key):
        kt, kn, kd = jax.random.split(key, 3)
        z0, b = batch["z"], batch["z"].shape[0]
        drop = jax.random.uniform(kd, (b,)) < SD_UNCOND_PROB
        ctx = jnp.where(drop[:, None, None], frozen["null"], batch["context"])
        t = jax.random.randint(kt, (b,), 0, ab.shape[0])
        a = ab[t][:, None, None, None]
        eps = jax.random.normal(kn, z0.shape)
        x = jnp.sqrt(a) * z0 + jnp.sqrt(1 - a) * eps
        if "depth" in batch:
            x = jnp.concatenate([x, batch["depth"]], -1)
        return jnp.mean((unet.apply(params, x, t, ctx) - eps) ** 2), {}
    return loss_fn


def sd_depth_conditions(disparity):
    """SD 2 depth conditions [..., h, w, 1] of true disparities [..., H, W] (near = larger),
    at the 4x latent size, through the pipelines' own map (``image.sd_depth_condition``)."""
    h, w = disparity.shape[-2:]
    flat = disparity.reshape((-1, h, w))
    f = jax.jit(lambda d: sd_depth_condition(d, "disparity", (h // 4, w // 4)))
    out = np.concatenate([np.asarray(f(flat[k:k + 256])) for k in range(0, len(flat), 256)])
    return out.reshape(disparity.shape[:-2] + out.shape[1:])


def sd_heldout_monitor(config: TrainConfig, unet, vae_params, vae_cfg, text_params, text_cfg,
                       name: str = "sd"):
    """``on_save(step, params)``: eps-MSE on held-out clips (seeds from HELDOUT_SEED_START,
    frames SD_EVAL_FRAMES, timesteps SD_EVAL_T, fixed noise, captioned), appended to
    work_dir/heldout_<name>.jsonl; also with the empty prompt ("eps_mse_empty_prompt") and, for
    a depth UNet (5 input channels, scored with each frame's true depth condition), with the
    next clip's depth ("eps_mse_wrong_depth"): the gaps are how much the model reads each
    condition. Returns the monitor and the held-out seeds."""
    held = eval_tiny.HeldOut.render(config.num_eval, config.height, config.width,
                                    max(SD_EVAL_FRAMES) + 1)
    frames = np.round(held.video01[:, list(SD_EVAL_FRAMES)] * 255).astype(np.uint8)
    z = encode_frames(vae_params, vae_cfg, frames) * vae_cfg.scaling_factor
    z = z.reshape((-1,) + z.shape[2:])
    ctx = np.repeat(sd_context(text_params, text_cfg, tiny.tokenizer()(list(held.captions))),
                    len(SD_EVAL_FRAMES), axis=0)
    ab = stable_diffusion_schedule().alphas_cumprod
    eps = np.random.default_rng(1234).standard_normal((len(SD_EVAL_T),) + z.shape, np.float32)
    null = np.repeat(sd_context(text_params, text_cfg, tiny.tokenizer()([""])), len(z), axis=0)
    # suffix -> (context, depth condition): the caption, and the empty prompt (the gap is how
    # much the model reads the text encoder); a depth UNet also with the next clip's depth.
    variants = {"": (ctx, None), "_empty_prompt": (null, None)}
    if unet is not None and unet.config.in_channels == 5:
        d = sd_depth_conditions(held.disparity[:, list(SD_EVAL_FRAMES)])
        d = d.reshape((-1,) + d.shape[2:])
        variants = {"": (ctx, d), "_empty_prompt": (null, d),
                    "_wrong_depth": (ctx, np.roll(d, len(SD_EVAL_FRAMES), axis=0))}

    @jax.jit
    def losses(params, context, depth):
        def one(t, e):
            a = float(ab[t])
            x = np.sqrt(a) * z + np.sqrt(1 - a) * e
            if depth is not None:
                x = jnp.concatenate([x, depth], -1)
            return jnp.mean((unet.apply(params, x, jnp.full((len(z),), t), context) - e) ** 2)
        return jnp.stack([one(t, eps[k]) for k, t in enumerate(SD_EVAL_T)])

    path, t0 = Path(config.work_dir) / f"heldout_{name}.jsonl", time.time()

    def on_save(step, params):
        row = {"step": step, "run_wall_s": round(time.time() - t0, 1)}
        for suffix, (context, depth) in variants.items():
            per_t = [float(v) for v in losses(params, context, depth)]
            row[f"eps_mse{suffix}"] = float(np.mean(per_t))
            row[f"eps_mse{suffix}_per_t"] = dict(zip(SD_EVAL_T, per_t))
        logging.info("[%s] held-out at step %d: %s", name, step, row)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    return on_save, held.seeds


def _sd_data(config: TrainConfig, data):
    """The SD stages' frozen inputs: scaled latents [N, T, h, w, 4] of the training clips,
    caption contexts [N, L, D], the empty prompt's, and the VAE / text encoder."""
    vae_params, vae_cfg = load(config, "vae")
    text_params, text_cfg = load(config, "text_encoder")
    z = video_latents(config, vae_params, vae_cfg, data["video"]) * vae_cfg.scaling_factor
    context = sd_context(text_params, text_cfg, data["tokens"])
    null = sd_context(text_params, text_cfg, tiny.tokenizer()([""]))
    return z, context, null, (vae_params, vae_cfg, text_params, text_cfg)


def stage_sd(config: TrainConfig, data):
    """The tiny SD UNet (tiny.SD_UNET) on single frames of the training clips and their
    captions, on output_dir's VAE latents and text encoder (both frozen, shared with the
    video family); saved as output_dir/sd_unet (``load_sd_models`` pairs it with them)."""
    z, context, null, frozen_nets = _sd_data(config, data)
    unet, bs = UNet2DCondition(tiny.SD_UNET), config.batch_for("sd")
    n, t = z.shape[:2]

    def batch_fn(rng):
        i, f = rng.integers(n, size=bs), rng.integers(t, size=bs)
        return {"z": z[i, f], "context": context[i]}

    params = jax.jit(unet.init)(jax.random.PRNGKey(config.seed + 5), jnp.zeros((1,) + z.shape[2:]),
                                jnp.zeros((1,)), jnp.asarray(context[:1]))
    on_save, _ = sd_heldout_monitor(config, unet, *frozen_nets)
    params, report = fit(config, "sd", params, sd_loss(unet, stable_diffusion_schedule().alphas_cumprod),
                         batch_fn, {"null": null}, on_save)
    # The training latents' per-channel mean: the pipelines' x_T (UNet2DConfig.latent_mean).
    mean = tuple(float(v) for v in z.reshape(-1, z.shape[-1]).mean(axis=0))
    save(config, "sd_unet", params, dataclasses.replace(tiny.SD_UNET, latent_mean=mean))
    return report


def with_zero_channels(params, extra: int):
    """``params`` with ``extra`` zero input channels appended to the UNet's conv_in kernel:
    the extra inputs start with no effect (InstructPix2Pix's zero-initialised added input
    channels, Brooks et al. 2023 Sec. 3.2), so the fine-tune starts at the source model."""
    out = jax.tree.map(lambda x: x, params)
    k = out["params"]["conv_in"]["kernel"]
    out["params"]["conv_in"]["kernel"] = jnp.concatenate(
        [k, jnp.zeros(k.shape[:2] + (extra, k.shape[3]), k.dtype)], axis=2)
    return out


def stage_sd_depth(config: TrainConfig, data):
    """The tiny SD 2 depth UNet (tiny.SD_DEPTH_UNET): output_dir's sd_unet with a fifth input
    channel (zero-initialised), fine-tuned on single frames + captions + each frame's depth
    condition (its true disparity through ``sd_depth_conditions``); saved as
    output_dir/sd_depth_unet (``load_sd_models(depth=True)``)."""
    z, context, null, frozen_nets = _sd_data(config, data)
    depth = sd_depth_conditions(data["disparity"])
    sd_params, sd_cfg = load(config, "sd_unet")
    cfg = dataclasses.replace(sd_cfg, in_channels=tiny.SD_DEPTH_UNET.in_channels)
    unet, bs = UNet2DCondition(cfg), config.batch_for("sd_depth")
    n, t = z.shape[:2]

    def batch_fn(rng):
        i, f = rng.integers(n, size=bs), rng.integers(t, size=bs)
        return {"z": z[i, f], "context": context[i], "depth": depth[i, f]}

    params = with_zero_channels(sd_params, cfg.in_channels - sd_cfg.in_channels)
    on_save, _ = sd_heldout_monitor(config, unet, *frozen_nets, name="sd_depth")
    params, report = fit(config, "sd_depth", params,
                         sd_loss(unet, stable_diffusion_schedule().alphas_cumprod),
                         batch_fn, {"null": null}, on_save)
    save(config, "sd_depth_unet", params, cfg)
    return report


# ----------------------------------------------------------------------------- run
STAGE_FNS = {"vae": stage_vae, "clip": stage_clip, "video": stage_video, "depth": stage_depth,
             "vae_decoder": stage_vae_decoder, "vae_joint": stage_vae_joint, "sd": stage_sd,
             "sd_depth": stage_sd_depth}


def train(config: TrainConfig) -> dict:
    """Runs ``config``'s stages in order -> {stage: its report (eval: the metrics)}."""
    config.validate()
    Path(config.work_dir).mkdir(parents=True, exist_ok=True)
    data, reports = None, {}
    for stage in config.stages:
        t0 = time.time()
        if stage == "eval":
            reports[stage] = eval_tiny.run(config.output_dir, config.num_eval, config.height,
                                           config.width, config.frames, config.docs_dir)
        else:
            if data is None:
                data = clip_cache(Path(config.work_dir), config.num_clips, config.height,
                                  config.width, config.frames, config.workers)
            reports[stage] = STAGE_FNS[stage](config, data)
        logging.info("stage %s done in %.0f s", stage, time.time() - t0)
    return reports


def config_from_flags() -> TrainConfig:
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)}
    if values["decoder_channels"] is not None:
        try:
            values["decoder_channels"] = tuple(int(c) for c in values["decoder_channels"])
        except ValueError as e:
            raise ValueError(f"decoder_channels: expected ints, got {values['decoder_channels']}") from e
    return TrainConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    train(config_from_flags())


if __name__ == "__main__":
    cf.set_defaults(steps=_T.steps, output_dir=_T.output_dir)
    app.run(main)
