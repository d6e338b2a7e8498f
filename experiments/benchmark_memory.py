"""Memory and FLOPs of the full-size networks' calls, from shapes alone (runs on a CPU).

    nice -n 10 python -m experiments.benchmark_memory [--stages dc512,dc1024,...]
        [--dtypes float32,bfloat16] [--before_tree DIR] [--memory_json out.json]
        [--time_calls] [--peak_tflops 989]

Each stage is one call as the pipelines make it, compiled by XLA from ``ShapeDtypeStruct``
inputs (parameters included, cast to the stage's dtype): no weights, no run. Per stage and
dtype: XLA's temporary and argument memory (``compiled.memory_analysis()``) and the
matmul/convolution FLOPs, counted from the jaxpr with every loop body multiplied by its trip
count and a ``lax.switch`` counted at its costliest branch (XLA's ``cost_analysis()`` counts
a loop body once, so it under-reports the blockwise path; it is kept in the JSON).

*before* is the code of ``--before_tree`` (a checkout of the commit before the memory work,
e.g. ``git archive 10a954f szero_jax | tar -x -C /tmp/before``), measured in a child process
with that tree first on ``PYTHONPATH``; *after* is this checkout with its default settings.

Two XLA:CPU behaviours a GPU does not share are switched off (``--cpu_xla device_like``,
the default; set through ``XLA_FLAGS`` before JAX starts; ``--cpu_xla default`` keeps them):
- its default scheduler orders independent work for parallelism: in a bfloat16 program it
  converts every weight to float32 up front (the CPU has no bfloat16 matmul/conv kernels) and
  keeps the copies live (+5.4 GB for the DynamiCrafter UNet). A GPU's scheduler is
  memory-aware and its kernels take bfloat16:
  ``--xla_cpu_enable_concurrency_optimized_scheduler=false``.
- its YNNPACK fusions fuse dot-softmax-dot chains into one kernel that never materialises
  the attention logits (the original path's 6.8 GB logits of one SD 2.1 768 layer "cost"
  0.14 GB), which XLA:GPU does not do: ``--xla_cpu_experimental_ynn_fusion_type=``.
Don't time CPU runs with these flags: the programs run ~1.7x slower.

``--time_calls`` (meant for a GPU): also run each stage with random parameters, and report
the time per call, the measured peak device memory and the fraction of the device's peak
FLOP rate (``--peak_tflops``, default from the device kind: H100/H200 989 bf16 dense).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

STAGES = ("dc512", "dc512_nocv", "dc512_half", "dc1024", "depthcrafter", "vae320", "vae576",
          "vae576_tiled", "sd21")
flags.DEFINE_list("stages", list(STAGES), f"stages to measure, of {STAGES}")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes")
flags.DEFINE_string("before_tree", "", "a checkout of the code before (its szero_jax/): adds "
                    "the 'before' column, measured in a child process")
flags.DEFINE_string("memory_json", "", "write every measurement here (JSON) as well")
flags.DEFINE_enum("cpu_xla", "device_like", ["device_like", "default"], "XLA:CPU memory "
                  "scheduler and fusions (see the module docstring)")
flags.DEFINE_bool("time_calls", False, "also time each stage and read peak device memory")
flags.DEFINE_float("peak_tflops", 0.0, "device peak TFLOP/s for --time_calls (0: by kind)")
flags.DEFINE_string("child_json", "", "internal: measure in this process, write JSON here")
FLAGS = flags.FLAGS

GB = 1e9
DEVICE_LIKE_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false "
                     "--xla_cpu_experimental_ynn_fusion_type=")
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, vendor datasheets
FRAMES = 16  # DynamiCrafter inference_*.yaml video_length / temporal_length
DEPTH_WINDOW = 110  # DepthCrafter run.py window_size
DEPTH_BATCH = 2  # CFG halves: this project's DepthConfig guidance 1.2 (StereoCrafter-Zero's)


# ----------------------------------------------------------------------------- stages
def _spec(shape, dtype):
    import jax
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _param_specs(init, dtype, *init_args):
    """Parameter shapes of a module, cast to ``dtype`` (parameters cast once at load)."""
    import jax
    shapes = jax.eval_shape(init, jax.random.key(0), *init_args)
    return jax.tree.map(lambda a: _spec(a.shape, dtype), shapes)


def build_stage(name: str, dtype):
    """(description, fn, args) of one call; args are ShapeDtypeStructs."""
    import jax.numpy as jnp
    from szero_jax.models import configs
    i32 = jnp.int32
    if name.startswith("dc"):
        from szero_jax.models.unet3d import UNet3D
        cfg = configs.get("dynamicrafter_1024" if name == "dc1024" else "dynamicrafter_512")
        h, w = cfg.latent_size
        # 2 views x CFG halves; dc512_half: one CFG half's two views (a low-memory call)
        net, b = UNet3D(cfg.unet, dtype=dtype), 2 if name == "dc512_half" else 4
        x = _spec((b, FRAMES, h, w, cfg.unet.in_channels), dtype)
        ctx = _spec((b, cfg.unet.text_context_len + cfg.unet.image_tokens_per_frame * FRAMES,
                     cfg.unet.context_dim), dtype)
        t, fs = _spec((b,), i32), _spec((b,), i32)
        params = _param_specs(net.init, dtype, x, t, ctx, fs)
        if name == "dc512_nocv":
            return (f"DynamiCrafter UNet, 4x{FRAMES}x{h}x{w}, cross_view=None (issue's setup)",
                    net.apply, (params, x, t, ctx, fs))
        return (f"DynamiCrafter UNet stereo call, {b}x{FRAMES}x{h}x{w}",
                lambda p, *a: net.apply(p, *a), (params, x, t, ctx, fs, _spec((), i32)))
    if name == "depthcrafter":
        from szero_jax.models.unet_st import UNetSpatioTemporal
        cfg = configs.get("depthcrafter_unet")
        net, b = UNetSpatioTemporal(cfg, dtype=dtype), DEPTH_BATCH
        x = _spec((b, DEPTH_WINDOW, 72, 128, cfg.in_channels), dtype)  # 576x1024
        t, ctx = _spec((b,), jnp.float32), _spec((b, DEPTH_WINDOW, cfg.cross_attention_dim), dtype)
        params = _param_specs(net.init, dtype, x, t, ctx)
        return (f"DepthCrafter UNet window, {b}x{DEPTH_WINDOW}x72x128", net.apply,
                (params, x, t, ctx))
    if name.startswith("vae"):
        from szero_jax.models import vae
        cfg = configs.get("dynamicrafter_vae")
        h, w = (40, 64) if name == "vae320" else (72, 128)
        net = vae.AutoencoderKL(cfg, dtype=dtype)
        params = _param_specs(net.init, dtype, _spec((1, 64, 64, 3), jnp.float32))
        z = _spec((1, FRAMES, h, w, cfg.latent_channels), dtype)
        if name == "vae576_tiled":
            if not hasattr(vae, "DecodeTiles"):
                return None
            tiles = vae.DecodeTiles()
            return (f"VAE decode {FRAMES} frames {8 * h}x{8 * w}, tiles {tiles.size}/"
                    f"{tiles.overlap}", lambda p, z: vae.decode_video(net, p, z, tiles=tiles),
                    (params, z))
        return (f"VAE decode {FRAMES} frames {8 * h}x{8 * w}",
                lambda p, z: vae.decode_video(net, p, z), (params, z))
    if name == "sd21":
        from szero_jax.models.unet2d import UNet2DCondition
        cfg = configs.get("sd21_unet")
        net, b, s = UNet2DCondition(cfg, dtype=dtype), 4, cfg.sample_size
        x = _spec((b, s, s, cfg.in_channels), dtype)
        t, ctx = _spec((b,), jnp.float32), _spec((b, 77, cfg.cross_attention_dim), dtype)
        params = _param_specs(net.init, dtype, x, t, ctx)
        return (f"SD 2.1 768 UNet stereo call, 4x{s}x{s}", lambda p, *a: net.apply(p, *a),
                (params, x, t, ctx, _spec((), i32)))
    raise ValueError(f"stages: unknown stage {name!r}; expected one of {STAGES}")


# ----------------------------------------------------------------------------- counting
def _dot_flops(eqn) -> float:
    import numpy as np
    (lc, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * np.prod(eqn.outvars[0].aval.shape, dtype=float) * np.prod(
        [lhs[d] for d in lc], dtype=float)


def _conv_flops(eqn) -> float:
    import numpy as np
    rhs = eqn.invars[1].aval.shape
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
    per_out = rhs[spec[1]] * np.prod([rhs[d] for d in spec[2:]], dtype=float)
    return 2.0 * np.prod(eqn.outvars[0].aval.shape, dtype=float) * per_out


def jaxpr_flops(jaxpr) -> float:
    """Matmul + convolution FLOPs of a (closed) jaxpr, loops times their trip counts."""
    from jax.extend import core
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "scan":
            total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"])
        elif name == "cond":
            total += max(jaxpr_flops(b) for b in eqn.params["branches"])
        elif name == "while":
            raise ValueError("a while loop of unknown trip count: FLOPs cannot be counted")
        else:
            for v in eqn.params.values():
                if isinstance(v, (core.Jaxpr, core.ClosedJaxpr)):
                    total += jaxpr_flops(v)
    return total


# ----------------------------------------------------------------------------- measuring
def measure(stage: str, dtype_name: str, time_calls: bool) -> dict | None:
    import jax
    import jax.numpy as jnp
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
    built = build_stage(stage, dtype)
    if built is None:
        return None
    desc, fn, args = built
    t0 = time.perf_counter()
    flops = jaxpr_flops(jax.make_jaxpr(fn)(*args))
    compiled = jax.jit(fn).lower(*args).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    row = dict(stage=stage, desc=desc, dtype=dtype_name, temp_gb=mem.temp_size_in_bytes / GB,
               arg_gb=mem.argument_size_in_bytes / GB, out_gb=mem.output_size_in_bytes / GB,
               tflops=flops / 1e12, xla_cost_tflops=float((cost or {}).get("flops", 0)) / 1e12,
               compile_s=time.perf_counter() - t0)
    if time_calls:
        row.update(_time_call(compiled, args, flops))
    return row


def _time_call(compiled, args, flops: float) -> dict:
    import jax
    import numpy as np
    key = iter(jax.random.split(jax.random.key(0), 4096))
    real = jax.tree.map(lambda s: (jax.random.normal(next(key), s.shape, s.dtype) * 0.02
                                   if jnp_floating(s.dtype) else np.zeros(s.shape, s.dtype)),
                        args)
    jax.block_until_ready(compiled(*real))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*real))
        times.append(time.perf_counter() - start)
    dev = jax.devices()[0]
    out = dict(call_s=float(np.median(times)), device=dev.device_kind)
    stats = dev.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["peak_gb"] = stats["peak_bytes_in_use"] / GB
    peak = FLAGS.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in dev.device_kind),
                                     0.0)
    if peak:
        out["peak_fraction"] = flops / out["call_s"] / (peak * 1e12)
    return out


def jnp_floating(dtype) -> bool:
    import jax.numpy as jnp
    return jnp.issubdtype(dtype, jnp.floating)


def _measure_all(stages, dtypes, time_calls) -> list[dict]:
    rows = []
    for stage in stages:
        for dt in dtypes:
            row = measure(stage, dt, time_calls)
            if row is not None:
                rows.append(row)
                print(f"    {stage} {dt}: temp {row['temp_gb']:.2f} GB, args {row['arg_gb']:.2f} "
                      f"GB, {row['tflops']:.1f} TFLOPs ({row['compile_s']:.0f} s)", flush=True)
    return rows


def _before_rows(tree: str, stages, dtypes) -> list[dict]:
    """The same measurements with ``tree``'s szero_jax, in a child process."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    argv = ["benchmark_memory", f"--child_json={path}", f"--stages={','.join(stages)}",
            f"--dtypes={','.join(dtypes)}", f"--cpu_xla={FLAGS.cpu_xla}"]
    # ``tree`` first on sys.path, so ``szero_jax`` is its copy; this script from here.
    code = (f"import sys; sys.path.insert(0, {os.path.abspath(tree)!r}); "
            f"sys.path.insert(1, {os.getcwd()!r}); from absl import app; "
            f"from experiments import benchmark_memory as m; app.run(m.main, argv={argv!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    with open(path) as fh:
        rows = json.load(fh)
    os.remove(path)
    return rows


def table(after: list[dict], before: list[dict]) -> str:
    key = lambda r: (r["stage"], r["dtype"])
    old = {key(r): r for r in before}
    head = ("| stage | dtype | temp before GB | temp after GB | ratio | args GB | TFLOPs before | "
            "TFLOPs after |")
    lines = [head, "|" + "---|" * 8]
    for r in after:
        b = old.get(key(r))
        fmt = lambda v, f="%.2f": (f % v) if v is not None else "-"
        ratio = (b["temp_gb"] / r["temp_gb"]) if b and r["temp_gb"] else None
        lines.append(f"| {r['desc']} | {r['dtype']} | {fmt(b and b['temp_gb'])} | "
                     f"{r['temp_gb']:.2f} | {fmt(ratio, '%.1fx')} | {r['arg_gb']:.2f} | "
                     f"{fmt(b and b['tflops'], '%.1f')} | {r['tflops']:.1f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.cpu_xla == "device_like":
        if "jax" in sys.modules:
            raise RuntimeError("--cpu_xla device_like must set XLA_FLAGS before JAX is imported")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + DEVICE_LIKE_FLAGS)
    unknown = set(FLAGS.stages) - set(STAGES)
    if unknown:
        raise ValueError(f"stages: unknown {sorted(unknown)}; expected some of {STAGES}")
    if FLAGS.child_json:
        import szero_jax
        print(f"    (szero_jax from {os.path.dirname(szero_jax.__file__)})", flush=True)
        rows = _measure_all(FLAGS.stages, FLAGS.dtypes, False)
        with open(FLAGS.child_json, "w") as fh:
            json.dump(rows, fh)
        return
    import jax
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, XLA:CPU "
          f"{FLAGS.cpu_xla} ({os.environ.get('XLA_FLAGS', '')})", flush=True)
    before = []
    if FLAGS.before_tree:
        print(f"before: {FLAGS.before_tree}", flush=True)
        before = _before_rows(FLAGS.before_tree, FLAGS.stages, FLAGS.dtypes)
    print("after: this checkout", flush=True)
    after = _measure_all(FLAGS.stages, FLAGS.dtypes, FLAGS.time_calls)
    print()
    print(table(after, before))
    if FLAGS.time_calls:
        for r in after:
            print(f"{r['stage']} {r['dtype']}: {r.get('call_s', 0) * 1e3:.1f} ms/call, peak "
                  f"{r.get('peak_gb', float('nan')):.2f} GB, {100 * r.get('peak_fraction', 0):.1f} "
                  f"% of peak FLOP/s ({r.get('device', '?')})")
    if FLAGS.memory_json:
        path = os.path.abspath(FLAGS.memory_json)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(before=before, after=after, cpu_xla=FLAGS.cpu_xla), fh,
                      indent=2)
        os.replace(tmp, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(app.run(main))
