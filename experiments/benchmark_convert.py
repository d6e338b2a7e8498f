"""Converter and loader memory at full size, on stand-ins of the released checkpoints.

    nice python -m experiments.benchmark_convert [--standins dynamicrafter,depthcrafter,sd21,openclip]
        [--convert_dtypes float32,bfloat16] [--standin_dir /tmp/szero_standins] [--keep_standins]
        [--output_json BENCHMARK_convert.json]

For each stand-in (``convert/standins.py``: random values, the real layout, names, shapes and
dtypes) and each output dtype, ``experiments.convert`` runs in a child process and reports
its peak resident memory (``wait4``'s ``ru_maxrss``, what ``/usr/bin/time -v`` prints as
"Maximum resident set size"), wall time, bytes read and written, and the ratios
peak / largest network (in the output dtype) and (peak - fixed overhead) / largest network,
the fixed overhead being a child converting the tiny fixture. Then (``--load_check``) the
converted DynamiCrafter bundle is loaded in bfloat16 (peak / its param bytes), and one UNet
call at a small latent is compared with the float32 load's. Stand-ins and outputs are
deleted afterwards (tens of GB) unless ``--keep_standins``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments import common_flags as cf

ROOT = Path(__file__).resolve().parents[1]
STANDINS = ("dynamicrafter", "depthcrafter", "sd21", "openclip")
FAMILY = {"dynamicrafter": "dynamicrafter", "depthcrafter": "depthcrafter",
          "sd21": "stable_diffusion", "openclip": "openclip"}

cf.declare(__name__, "output_json")
flags.DEFINE_list("standins", list(STANDINS), f"Stand-ins to convert, of {list(STANDINS)} "
                  "(default: all)")
flags.DEFINE_list("convert_dtypes", ["float32", "bfloat16"], "Output dtypes to convert each "
                  "stand-in to (default: float32,bfloat16)")
flags.DEFINE_string("standin_dir", "/tmp/szero_standins", "Scratch folder for the stand-ins "
                    "and the converted outputs (default /tmp/szero_standins; needs ~45 GB "
                    "free for DynamiCrafter)")
flags.DEFINE_bool("keep_standins", False, "Keep the stand-ins and outputs (default False)")
flags.DEFINE_bool("load_check", True, "Load the converted DynamiCrafter bundle in bfloat16 "
                  "and compare one UNet call with the float32 load (default True)")
FLAGS = flags.FLAGS

GB = 1e9


# Runs argv[2:] and writes its wait4 rusage to argv[1]. Linux carries a process's peak RSS
# across exec, and a child forked (or vforked) from a big process starts with the parent's
# resident set, so the measured command is started from this small interpreter instead.
_WRAPPER = """import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write(json.dumps([usage.ru_maxrss, os.waitstatus_to_exitcode(status)]))
sys.exit(0)"""


def measure(cmd: list[str], log: Path) -> dict:
    """Runs ``cmd`` (a child, output to ``log``); its peak RSS from wait4, like time -v."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    usage_file = Path(f"{log}.rusage")
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-S", "-c", _WRAPPER, str(usage_file), *cmd], cwd=ROOT,
                       env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    maxrss, rc = json.loads(usage_file.read_text())
    usage_file.unlink()
    peak = maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"rc": rc, "peak_rss_gb": peak / GB, "wall_s": time.perf_counter() - start,
            "log": str(log)}


def du(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def network_bytes(checkpoint: Path) -> dict[str, int]:
    """{network: bytes} of a converted checkpoint (DynamiCrafter: per part)."""
    from szero_jax import checkpoints, tensorfile  # pylint: disable=import-outside-toplevel
    tf = tensorfile.TensorFile(Path(checkpoint) / checkpoints.PARAMS_FILE)
    if checkpoints.load_config(checkpoint)[1] != "dynamicrafter":
        return {Path(checkpoint).name: sum(tf.nbytes(k) for k in tf)}
    out: dict[str, int] = {}
    for k in tf:
        part = k.split(checkpoints.SEP)[0]
        out[part] = out.get(part, 0) + tf.nbytes(k)
    return out


def convert_cmd(name: str, source, out: Path, dtype: str) -> list[str]:
    cmd = [sys.executable, "-m", "experiments.convert", f"--family={FAMILY[name]}",
           f"--output_dir={out}", f"--dtype={dtype}"]
    if name == "depthcrafter":
        return cmd + [f"--checkpoint={source[0]}", f"--svd_dir={source[1]}"]
    return cmd + [f"--checkpoint={source}"]


def written_checkpoints(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.rglob("config.json") if (p.parent / "params.safetensors").is_file())


def overhead(work: Path) -> dict:
    """The converter's fixed cost: a child converting the tiny DynamiCrafter fixture."""
    import torch  # pylint: disable=import-outside-toplevel
    from szero_jax import checkpoints  # pylint: disable=import-outside-toplevel
    from tests.test_convert_dynamicrafter import _tiny_config, _tiny_state  # pylint: disable=import-outside-toplevel
    d = ROOT / "tests" / "fixtures" / "dynamicrafter"
    torch.save({"state_dict": _tiny_state(d)}, work / "tiny.ckpt")
    (work / "tiny.json").write_text(json.dumps({"config": checkpoints._encode(_tiny_config(d))}))  # pylint: disable=protected-access
    cmd = [sys.executable, "-m", "experiments.convert", "--family=dynamicrafter",
           f"--checkpoint={work / 'tiny.ckpt'}", f"--output_dir={work / 'tiny_out'}",
           f"--config={work / 'tiny.json'}", "--parts=unet,resampler"]
    result = measure(cmd, work / "tiny.log")
    shutil.rmtree(work / "tiny_out", ignore_errors=True)
    return result


# ------------------------------------------------------------------------ load check (child)
LATENT = (1, 2, 16, 16)  # batch, frames, height, width: a small latent for the UNet call


def unet_inputs(cfg):
    rng = np.random.default_rng(0)
    b, t, h, w = LATENT
    u = cfg.unet
    x = rng.standard_normal((b, t, h, w, u.in_channels)).astype(np.float32)
    ctx = rng.standard_normal((b, u.text_context_len + u.image_tokens_per_frame * t,
                               u.context_dim)).astype(np.float32)
    return x, np.full((b,), 500.0, np.float32), ctx, np.full((b,), 24.0, np.float32)


def load_child(bundle: str, dtype: str, out_prefix: str) -> None:
    """(child) Loads ``bundle`` in ``dtype``: bfloat16 through load_video_models (the whole
    bundle), float32 as the reference from its UNet tensors alone. Runs one UNet call in
    ``dtype`` (float32 also in bfloat16 compute, from its float32 params), saves the outputs
    to ``<out_prefix>_<compute dtype>.npy`` and prints the memory as JSON."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax import checkpoints, tensorfile  # pylint: disable=import-outside-toplevel
    from szero_jax.pipelines import bundles  # pylint: disable=import-outside-toplevel
    from szero_jax.models.unet3d import UNet3D  # pylint: disable=import-outside-toplevel
    start = time.perf_counter()
    if dtype == "bfloat16":
        models = bundles.load_video_models(bundle, "bfloat16")
        nets = [models.unet, models.resampler, models.vae, models.text_encoder,
                models.image_encoder]
        params, cfg = models.unet.params, models.config
        n_bytes = sum(checkpoints.param_bytes(n.params) for n in nets)
    else:
        cfg, _ = checkpoints.load_config(bundle, "dynamicrafter")
        tf = tensorfile.TensorFile(Path(bundle) / checkpoints.PARAMS_FILE)
        params = checkpoints.unflatten({k[len("unet/"):]: jax.device_put(tf[k]) for k in tf
                                        if k.startswith("unet/")})
        n_bytes = checkpoints.param_bytes(params)
    result = {"param_bytes": n_bytes, "load_s": time.perf_counter() - start,
              "load_peak_bytes": bundles.peak_rss_bytes()}
    x, t, ctx, fs = unet_inputs(cfg)
    for compute in (dtype,) if dtype == "bfloat16" else ("float32", "bfloat16"):
        dt = bundles.DTYPES[compute]
        fn = jax.jit(lambda p, *a, dt=dt: UNet3D(cfg.unet, dtype=dt).apply({"params": p}, *a))
        start = time.perf_counter()
        y = fn(params, jnp.asarray(x, dt), jnp.asarray(t), jnp.asarray(ctx, dt), jnp.asarray(fs))
        np.save(f"{out_prefix}_{compute}.npy", np.asarray(jnp.asarray(y, jnp.float32)))
        result[f"call_{compute}_s"] = time.perf_counter() - start
        result[f"call_{compute}_peak_bytes"] = bundles.peak_rss_bytes()
    print(json.dumps(result))


def load_check(f32: Path, bf16: Path, work: Path) -> dict:
    """Children loading the float32 and the bfloat16 bundles; the UNet calls compared."""
    rows = {}
    for dtype, bundle in (("bfloat16", bf16), ("float32", f32)):
        code = (f"from experiments.benchmark_convert import load_child; load_child("
                f"{str(bundle)!r}, {dtype!r}, {str(work / f'unet_{dtype}_params')!r})")
        res = measure([sys.executable, "-c", code], work / f"load_{dtype}.log")
        lines = [l for l in Path(res["log"]).read_text().splitlines() if l.startswith("{")]
        if res["rc"] or not lines:
            raise RuntimeError(f"load check {dtype} failed, see {res['log']}")
        rows[dtype] = dict(res, **json.loads(lines[-1]))
    ref = np.load(work / "unet_float32_params_float32.npy")        # f32 load, f32 compute
    same = np.load(work / "unet_float32_params_bfloat16.npy")      # f32 load, bf16 compute
    got = np.load(work / "unet_bfloat16_params_bfloat16.npy")      # bf16 load, bf16 compute
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    bf = rows["bfloat16"]
    return {"rows": rows, "latent": LATENT, "unet_out_std": float(ref.std()),
            "bf16_load_peak_over_param_bytes": bf["load_peak_bytes"] / bf["param_bytes"],
            # the bf16 run vs the float32 run: bfloat16 weights and arithmetic together
            "unet_call_rel_l2": rel(got, ref),
            "unet_call_max_abs_over_max_ref": float(np.abs(got - ref).max() / np.abs(ref).max()),
            # bf16 arithmetic on the float32 params (cast at use): bf16's own error
            "bf16_compute_rel_l2": rel(same, ref),
            # bf16 load vs casting the float32 params at use: what the loader adds
            "bf16_load_vs_cast_at_use_rel_l2": rel(got, same)}


# ------------------------------------------------------------------------------ main
def main(argv):
    del argv
    unknown = [s for s in FLAGS.standins if s not in STANDINS]
    if unknown:
        raise app.UsageError(f"--standins: unknown {unknown}; expected some of {list(STANDINS)}")
    bad = [d for d in FLAGS.convert_dtypes if d not in cf.DTYPES]
    if bad:
        raise app.UsageError(f"--convert_dtypes: unknown {bad}; expected some of {cf.DTYPES}")
    work = Path(FLAGS.standin_dir)
    work.mkdir(parents=True, exist_ok=True)
    report = {"overhead": overhead(work), "conversions": [], "standins": {}}
    base = report["overhead"]["peak_rss_gb"]
    print(f"fixed overhead (tiny conversion): peak {base:.2f} GB")
    for name in FLAGS.standins:
        start = time.perf_counter()
        code = (f"from convert import standins; import json; r = standins.make({name!r}, "
                f"{str(work)!r}); print('SOURCE', json.dumps([str(p) for p in r] if "
                f"isinstance(r, tuple) else str(r)))")
        built = measure([sys.executable, "-c", code], work / f"build_{name}.log")
        line = [l for l in Path(built["log"]).read_text().splitlines() if l.startswith("SOURCE ")]
        if built["rc"] or not line:
            raise RuntimeError(f"building the {name} stand-in failed, see {built['log']}")
        source = json.loads(line[-1][len("SOURCE "):])
        src_bytes = sum(du(Path(s)) for s in (source if isinstance(source, list) else [source]))
        report["standins"][name] = dict(built, bytes=src_bytes,
                                        build_s=time.perf_counter() - start)
        print(f"{name}: stand-in {src_bytes / GB:.2f} GB built in {built['wall_s']:.0f} s "
              f"(peak {built['peak_rss_gb']:.2f} GB)")
        outs = {}
        for dtype in FLAGS.convert_dtypes:
            out = work / f"{name}_{dtype}"
            shutil.rmtree(out, ignore_errors=True)
            res = measure(convert_cmd(name, source, out, dtype), work / f"convert_{name}_{dtype}.log")
            if res["rc"]:
                raise RuntimeError(f"converting {name} to {dtype} failed, see {res['log']}")
            nets = {}
            for ck in written_checkpoints(out):
                nets.update(network_bytes(ck))
            largest = max(nets.values())
            row = dict(res, standin=name, dtype=dtype, source_gb=src_bytes / GB,
                       written_gb=du(out) / GB, networks_gb={k: v / GB for k, v in nets.items()},
                       largest_network_gb=largest / GB,
                       peak_over_largest=res["peak_rss_gb"] * GB / largest,
                       peak_minus_overhead_over_largest=(res["peak_rss_gb"] - base) * GB / largest)
            report["conversions"].append(row)
            outs[dtype] = out
            print(f"{name} -> {dtype}: peak {row['peak_rss_gb']:.2f} GB, {row['wall_s']:.0f} s, "
                  f"wrote {row['written_gb']:.2f} GB; largest network "
                  f"{row['largest_network_gb']:.2f} GB: peak/largest {row['peak_over_largest']:.2f}, "
                  f"(peak - overhead)/largest {row['peak_minus_overhead_over_largest']:.2f}")
        if name == "dynamicrafter" and FLAGS.load_check and {"float32", "bfloat16"} <= set(outs):
            lc = load_check(outs["float32"], outs["bfloat16"], work)
            report["load_check"] = lc
            bf = lc["rows"]["bfloat16"]
            print(f"dynamicrafter bundle, bfloat16 load: {bf['param_bytes'] / GB:.2f} GB params, "
                  f"peak after load {bf['load_peak_bytes'] / GB:.2f} GB "
                  f"({lc['bf16_load_peak_over_param_bytes']:.2f}x), after one UNet call "
                  f"{bf['call_bfloat16_peak_bytes'] / GB:.2f} GB; float32 UNet-only load peak "
                  f"{lc['rows']['float32']['load_peak_bytes'] / GB:.2f} GB; UNet call bf16 load "
                  f"vs f32 load: rel. L2 {lc['unet_call_rel_l2']:.4f}, max abs / max ref "
                  f"{lc['unet_call_max_abs_over_max_ref']:.4f} (bf16 compute on the f32 params: "
                  f"rel. L2 {lc['bf16_compute_rel_l2']:.4f}; bf16 load vs it: rel. L2 "
                  f"{lc['bf16_load_vs_cast_at_use_rel_l2']:.4f})")
        if not FLAGS.keep_standins:
            for p in [Path(s) for s in (source if isinstance(source, list) else [source])] + list(outs.values()):
                target = p.parent if name in ("dynamicrafter", "openclip") and p.is_file() else p
                shutil.rmtree(target, ignore_errors=True)
            if name == "depthcrafter":
                shutil.rmtree(work / "DepthCrafter", ignore_errors=True)
                shutil.rmtree(work / "svd", ignore_errors=True)
    if FLAGS.output_json:
        Path(FLAGS.output_json).write_text(json.dumps(report, indent=1))
    if not FLAGS.keep_standins:   # the logs stay
        for p in [work / "tiny.ckpt", work / "tiny.json", *work.glob("unet_*.npy")]:
            p.unlink(missing_ok=True)


if __name__ == "__main__":
    app.run(main)
