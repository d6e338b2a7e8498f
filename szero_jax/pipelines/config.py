"""Settings that travel together through a stereo job, as frozen dataclasses.

``SamplingConfig``: the diffusion sampler's settings (DDIM steps, eta, CFG, frame stride,
seed). ``DepthConfig``: where the disparity comes from and how it is scaled. Together with
``StereoCrafterZeroConfig`` / ``StereoDiffusionConfig`` (``szero_jax.stereo``) they are all
a pipeline takes besides the models, the inputs and the prompt. Each default is written
here once, with its source; launcher flags and benchmarks read it from here. ``None``
means "the checkpoint's (or the mode's) own value", resolved by the pipeline.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

DEPTH_KINDS = ("depth", "disparity", "disparity_px")
DEPTH_SOURCES = ("model", "given")
DISSOLVE_PLAN_STEPS = 50   # released: dissolving indexes a 50-step schedule at 50 - step


def _fail(owner, field, expected, value):
    raise ValueError(f"{field}: expected {expected}, got {value!r} ({owner})")


def check_int(owner: str, field: str, value, lo: int = 1, hi: Optional[int] = None) -> int:
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo
            or (hi is not None and value > hi)):
        _fail(owner, field, f"an int in [{lo}, {'inf' if hi is None else hi}]", value)
    return int(value)


def check_number(owner: str, field: str, value, lo: float, hi: float) -> float:
    if (not isinstance(value, (int, float, np.number)) or isinstance(value, bool)
            or not lo <= float(value) <= hi):
        _fail(owner, field, f"a number in [{lo}, {hi}]", value)
    return float(value)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """DDIM sampling. Defaults: DynamiCrafter ``scripts/run.sh`` (image-to-video)."""
    steps: int = 50                    # run.sh ddim_steps (StereoDiffusion scripts: also 50)
    eta: float = 1.0                   # run.sh ddim_eta
    guidance: Optional[float] = None   # None: the checkpoint's (run.sh 7.5; tiny family 1.0)
    guidance_rescale: float = 0.7      # run.sh guidance_rescale
    fs: Optional[int] = None           # frame stride; None: the UNet config's (24 at 512)
    seed: int = 0
    start_step: int = 0                # plan steps skipped at the noisy end (inversion)
    negative_prompt: str = ""          # CFG's unconditional text (SD, DynamiCrafter: "")

    @classmethod
    def inversion(cls, **overrides) -> "SamplingConfig":
        """Footage conversion: DDIM inversion then deterministic sampling (eta 0) at
        guidance 1 without rescale, so sampling retraces the inversion; ``start_step`` 1
        skips t = 999, where the zero-terminal-SNR schedule leaves no signal to invert."""
        return dataclasses.replace(cls(eta=0.0, guidance=1.0, guidance_rescale=0.0,
                                       start_step=1), **overrides)

    @classmethod
    def stereo_image(cls, **overrides) -> "SamplingConfig":
        """StereoDiffusion: 50 DDIM steps at eta 0 (txt2stereoimg.py / img2stereo.py sample
        deterministically); guidance None = the mode's (9.0 text, 7.5 image / depth)."""
        return dataclasses.replace(cls(eta=0.0, guidance_rescale=0.0), **overrides)

    def validate(self) -> "SamplingConfig":
        owner = "SamplingConfig"
        check_int(owner, "steps", self.steps, 1)
        check_number(owner, "eta", self.eta, 0.0, 10.0)
        if self.guidance is not None:
            check_number(owner, "guidance", self.guidance, 0.0, 100.0)
        check_number(owner, "guidance_rescale", self.guidance_rescale, 0.0, 1.0)
        if self.fs is not None:
            check_int(owner, "fs", self.fs, 0)
        check_int(owner, "seed", self.seed, 0)
        check_int(owner, "start_step", self.start_step, 0, max(self.steps - 2, 0))
        if not isinstance(self.negative_prompt, str):
            _fail(owner, "negative_prompt", "a string", self.negative_prompt)
        return self

    @property
    def plan_steps(self) -> int:
        """Sampling steps left after ``start_step`` (what the stereo schedule counts)."""
        return self.steps - self.start_step


@dataclasses.dataclass(frozen=True)
class DepthConfig:
    """Disparity of the left view. ``source``: "model" (the bundle's depth network on the
    left video, then dissolved) or "given" (a map passed to the pipeline); None = "given"
    when a map is passed, else "model"."""
    source: Optional[str] = None
    kind: str = "depth"                  # a given map's meaning: "depth" (larger = farther)
                                         # or "disparity" (larger = nearer, as DPT returns),
                                         # or "disparity_px" (pixels of the map's own width,
                                         # x_right = x_left - d: used as is, no normalisation)
    blur_sigma: float = 4.0              # px; Gaussian low-pass of a given map, the paper's
                                         # heuristic-filter fallback (Sec. 4.3; sigma ours)
    max_disparity: Optional[float] = None  # near-to-far span / width; None: the checkpoint's
                                           # (0.08 = StereoCrafter-Zero's scale 8)
    convergence: Optional[float] = None  # zero-parallax plane in [0, 1]; None: far plane
    dissolve_step: int = 20              # released examples use 5, 20, 30 (i2v_test.py)
    steps: int = 5                       # DepthCrafter run.py num_inference_steps
    guidance: float = 1.2                # StereoCrafter-Zero depthcrafter.py infer_frames

    @classmethod
    def stereo_image(cls, **overrides) -> "DepthConfig":
        """StereoDiffusion: a given map of relative disparity (DPT's output) shifting 8 % of
        the width (docs/references.md), no blur."""
        return dataclasses.replace(cls(source="given", kind="disparity", blur_sigma=0.0,
                                       max_disparity=0.08), **overrides)

    def validate(self) -> "DepthConfig":
        owner = "DepthConfig"
        if self.source is not None and self.source not in DEPTH_SOURCES:
            _fail(owner, "source", f"one of {DEPTH_SOURCES} or None", self.source)
        if self.kind not in DEPTH_KINDS:
            _fail(owner, "kind", f"one of {DEPTH_KINDS}", self.kind)
        if self.kind == "disparity_px" and self.source == "model":
            _fail(owner, "kind", "'depth' or 'disparity' for the depth model's output "
                  "('disparity_px' describes a given map)", self.kind)
        check_number(owner, "blur_sigma", self.blur_sigma, 0.0, 1e3)
        if self.max_disparity is not None:
            check_number(owner, "max_disparity", self.max_disparity, 1e-6, 1.0)
        if self.convergence is not None:
            check_number(owner, "convergence", self.convergence, 0.0, 1.0)
        check_int(owner, "dissolve_step", self.dissolve_step, 0, DISSOLVE_PLAN_STEPS)
        check_int(owner, "steps", self.steps, 1)
        check_number(owner, "guidance", self.guidance, 0.0, 100.0)
        return self

    def resolve_source(self, depth_map) -> str:
        source = self.source or ("model" if depth_map is None else "given")
        if source == "given" and depth_map is None:
            raise ValueError("depth_map: DepthConfig.source is 'given' but no depth map was "
                             "passed")
        if source == "model" and depth_map is not None:
            raise ValueError("depth_map: passed, but DepthConfig.source is 'model'")
        return source

    @property
    def evaluations(self) -> int:
        """Depth network evaluations: the Euler steps, plus one when dissolving."""
        return self.steps + (1 if self.dissolve_step > 0 else 0)
