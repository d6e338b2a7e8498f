"""pipelines.footage_devices: the stereo windows' decoded right views are the same bits on 1, 2
and 4 (forced CPU) devices.

Each side runs this file as a subprocess (XLA_FLAGS must be set before jax starts). XLA:CPU
gives all its devices one intra-op thread pool of max(PJRT_NPROC or the cores, devices)
threads, and a convolution's rounding depends on that count: on a 2-core machine 4 forced
devices mean 4 threads, and the VAE decoder's last convolution (16 -> 3 channels) then rounds
differently (~4e-7, measured) whatever the mesh. So both processes pin the pool to 4
threads; what is compared is the program's own dependence on the number of devices: a
1-device process, and a 4-device process on meshes of 2 and 4 devices.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = 4
STEPS = 2


def _run(devices: int, meshes, out: Path) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PJRT_NPROC="4", PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, ",".join(map(str, meshes)), str(out)],
                          env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_stereo_windows_bitwise_equal_on_1_2_4_devices(tmp_path):
    four = _run(4, (2, 4), tmp_path / "four.npz")
    one = _run(1, (1,), tmp_path / "one.npz")
    assert four["devices"] == 4 and one["devices"] == 1
    assert four["mesh_sizes"] == [2, 4] and one["mesh_sizes"] == [1]
    got4, got1 = np.load(tmp_path / "four.npz"), np.load(tmp_path / "one.npz")
    ref = got1["mesh1"]
    assert ref.shape == (WINDOWS, 8, 80, 128, 3)
    assert np.isfinite(ref).all() and ref.std() > 0.05           # real views, not zeros
    assert not np.array_equal(ref[0], ref[1])                    # the windows differ
    for n in (2, 4):
        got = got4[f"mesh{n}"]
        assert np.array_equal(got, ref), (n, float(np.abs(got - ref).max()))


# ------------------------------------------------------------------------- subprocess side
def _main(meshes: str, out: str) -> None:
    import jax
    from szero_jax import pipelines, world
    from szero_jax.pipelines import stages as S
    from szero_jax.pipelines.common import StageTimer
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig
    from szero_jax.pipelines.footage_devices import WindowPrograms, window_mesh
    from szero_jax.stereo import StereoCrafterZeroConfig

    models = pipelines.load_video_models(None)
    length = models.num_frames
    h, w = (s * models.vae_factor for s in models.config.latent_size)
    scene = world.make_scene(1_000_003, h, w, WINDOWS * length)
    rows = lambda a: np.stack([a[i * length:(i + 1) * length] for i in range(WINDOWS)])
    video, disparity = rows(scene.left), rows(scene.disparity)
    keys = np.stack([np.asarray(jax.random.fold_in(S.job_keys(0).sample, i))
                     for i in range(WINDOWS)])
    sampling = S.resolve(models, SamplingConfig.inversion(steps=STEPS))
    stereo = StereoCrafterZeroConfig(restart_steps=1, restart_rounds=1, refine_rounds=0)
    sizes, res = [int(n) for n in meshes.split(",")], {}
    for n in sizes:
        programs = WindowPrograms(models, window_mesh(n), "a background", sampling, stereo,
                                  DepthConfig())
        assert programs.size == n
        res[f"mesh{n}"] = np.concatenate([
            programs.stereo(video[i:i + n], disparity[i:i + n], keys[i:i + n], StageTimer())
            for i in range(0, WINDOWS, n)])
    np.savez(out, **res)
    print(json.dumps({"devices": jax.device_count(), "mesh_sizes": sizes}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
