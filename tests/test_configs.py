"""The pipelines' config objects (``pipelines/config.py``): every field's bad value is
rejected by ``validate()`` with a ValueError naming the field, the defaults are the values
their comments cite, and no public function in ``szero_jax/`` takes more than 8 parameters."""
import ast
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from szero_jax.pipelines.config import DEPTH_KINDS, DEPTH_SOURCES, DepthConfig, SamplingConfig

PACKAGE = Path(__file__).resolve().parents[1] / "szero_jax"
MAX_PARAMETERS = 8      # issue 10: no public function in szero_jax/ takes more than 8


# (field, bad value, what the message says is expected)
SAMPLING_BAD = [
    ("steps", 0, r"an int in \[1, inf\]"),
    ("steps", 2.5, r"an int in \[1, inf\]"),
    ("steps", True, r"an int in \[1, inf\]"),
    ("steps", "50", r"an int in \[1, inf\]"),
    ("eta", -0.1, r"a number in \[0.0, 10.0\]"),
    ("eta", 11.0, r"a number in \[0.0, 10.0\]"),
    ("eta", None, r"a number in \[0.0, 10.0\]"),
    ("guidance", -1.0, r"a number in \[0.0, 100.0\]"),
    ("guidance", 101.0, r"a number in \[0.0, 100.0\]"),
    ("guidance", "7.5", r"a number in \[0.0, 100.0\]"),
    ("guidance_rescale", -0.1, r"a number in \[0.0, 1.0\]"),
    ("guidance_rescale", 1.5, r"a number in \[0.0, 1.0\]"),
    ("fs", -1, r"an int in \[0, inf\]"),
    ("fs", 2.5, r"an int in \[0, inf\]"),
    ("seed", -1, r"an int in \[0, inf\]"),
    ("seed", 1.0, r"an int in \[0, inf\]"),
    ("start_step", -1, r"an int in \[0, 48\]"),       # 50 steps: at most 48 skipped
    ("start_step", 49, r"an int in \[0, 48\]"),
    ("negative_prompt", None, r"a string"),
    ("negative_prompt", 3, r"a string"),
]

DEPTH_BAD = [
    ("source", "file", re.escape(f"one of {DEPTH_SOURCES} or None")),
    ("kind", "inverse", re.escape(f"one of {DEPTH_KINDS}")),
    ("kind", None, re.escape(f"one of {DEPTH_KINDS}")),
    ("blur_sigma", -1.0, r"a number in \[0.0, 1000.0\]"),
    ("blur_sigma", "4", r"a number in \[0.0, 1000.0\]"),
    ("max_disparity", 0.0, r"a number in \[1e-06, 1.0\]"),
    ("max_disparity", 2.0, r"a number in \[1e-06, 1.0\]"),
    ("convergence", -0.1, r"a number in \[0.0, 1.0\]"),
    ("convergence", 1.5, r"a number in \[0.0, 1.0\]"),
    ("dissolve_step", -1, r"an int in \[0, 50\]"),
    ("dissolve_step", 51, r"an int in \[0, 50\]"),
    ("dissolve_step", 20.0, r"an int in \[0, 50\]"),
    ("steps", 0, r"an int in \[1, inf\]"),
    ("guidance", -1.0, r"a number in \[0.0, 100.0\]"),
]


def _names_field(message: str, field: str, owner: str) -> bool:
    """The message opens with the field's name (or its flag's, ``depth_<field>``) and says
    which config it belongs to."""
    flag = "depth_" + field if owner == "DepthConfig" else field
    return bool(re.match(rf"({re.escape(field)}|{re.escape(flag)}): ", message)) and \
        f"({owner})" in message


@pytest.mark.parametrize("field, value, expected", SAMPLING_BAD)
def test_sampling_config_names_the_bad_field(field, value, expected):
    with pytest.raises(ValueError, match=rf"expected {expected}, got ") as err:
        dataclasses.replace(SamplingConfig(), **{field: value}).validate()
    assert _names_field(str(err.value), field, "SamplingConfig"), str(err.value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize("field, value, expected", DEPTH_BAD)
def test_depth_config_names_the_bad_field(field, value, expected):
    with pytest.raises(ValueError, match=rf"expected {expected}, got ") as err:
        dataclasses.replace(DepthConfig(), **{field: value}).validate()
    assert _names_field(str(err.value), field, "DepthConfig"), str(err.value)
    assert repr(value) in str(err.value)


def test_every_field_has_a_bad_value_case():
    assert {f for f, _, _ in SAMPLING_BAD} == {f.name for f in dataclasses.fields(SamplingConfig)}
    assert {f for f, _, _ in DEPTH_BAD} == {f.name for f in dataclasses.fields(DepthConfig)}


def test_valid_edges_pass():
    for cfg in (SamplingConfig(), SamplingConfig.inversion(), SamplingConfig.stereo_image(),
                SamplingConfig(steps=1), SamplingConfig(steps=10, start_step=8, fs=0, eta=0.0,
                                                         guidance=0.0, guidance_rescale=1.0),
                SamplingConfig(seed=np.int64(3), steps=np.int32(4))):
        assert cfg.validate() is cfg
    for cfg in (DepthConfig(), DepthConfig.stereo_image(), DepthConfig(source="model"),
                DepthConfig(kind="disparity", blur_sigma=0.0, max_disparity=1.0,
                            convergence=0.5, dissolve_step=0, steps=1, guidance=0.0),
                DepthConfig(dissolve_step=50)):
        assert cfg.validate() is cfg


def test_sampling_defaults_are_the_cited_values():
    # DynamiCrafter scripts/run.sh: ddim_steps 50, ddim_eta 1.0, guidance_rescale 0.7; CFG
    # and frame stride come from the checkpoint (None); CFG's unconditional text is "".
    assert dataclasses.asdict(SamplingConfig()) == dict(
        steps=50, eta=1.0, guidance=None, guidance_rescale=0.7, fs=None, seed=0, start_step=0,
        negative_prompt="")
    # footage conversion: eta 0, guidance 1, no rescale, t = 999 skipped
    inv = SamplingConfig.inversion()
    assert (inv.steps, inv.eta, inv.guidance, inv.guidance_rescale, inv.start_step) == \
        (50, 0.0, 1.0, 0.0, 1)
    assert inv.plan_steps == 49 and SamplingConfig().plan_steps == 50
    # StereoDiffusion (txt2stereoimg.py / img2stereo.py): 50 DDIM steps at eta 0; guidance
    # None = the mode's
    sd = SamplingConfig.stereo_image()
    assert (sd.steps, sd.eta, sd.guidance, sd.guidance_rescale, sd.start_step) == \
        (50, 0.0, None, 0.0, 0)
    # the constructors take overrides, keeping the rest
    assert SamplingConfig.inversion(steps=8, seed=3) == dataclasses.replace(inv, steps=8, seed=3)
    assert SamplingConfig.stereo_image(guidance=7.5).eta == 0.0


def test_depth_defaults_are_the_cited_values():
    # DepthCrafter run.py: 5 steps; StereoCrafter-Zero calls it at guidance 1.2 and dissolves
    # at step 20 (examples: 5, 20, 30); blur 4 px (the heuristic-filter fallback, Sec. 4.3);
    # max disparity from the checkpoint (None), far plane at zero (convergence None).
    assert dataclasses.asdict(DepthConfig()) == dict(
        source=None, kind="depth", blur_sigma=4.0, max_disparity=None, convergence=None,
        dissolve_step=20, steps=5, guidance=1.2)
    assert DepthConfig().evaluations == 6 and DepthConfig(dissolve_step=0).evaluations == 5
    # StereoDiffusion: a given DPT map (relative disparity), 8 % of the width, no blur
    sd = DepthConfig.stereo_image()
    assert (sd.source, sd.kind, sd.blur_sigma, sd.max_disparity) == \
        ("given", "disparity", 0.0, 0.08)
    assert DepthConfig.stereo_image(max_disparity=0.05).kind == "disparity"


def test_depth_source_resolution():
    d = np.ones((2, 4, 4))
    assert DepthConfig().resolve_source(None) == "model"
    assert DepthConfig().resolve_source(d) == "given"
    assert DepthConfig(source="model").resolve_source(None) == "model"
    with pytest.raises(ValueError, match="depth_map: DepthConfig.source is 'given' but no"):
        DepthConfig(source="given").resolve_source(None)
    with pytest.raises(ValueError, match="depth_map: passed, but DepthConfig.source is 'model'"):
        DepthConfig(source="model").resolve_source(d)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SamplingConfig().steps = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        DepthConfig().kind = "disparity"


# ------------------------------------------------------------------- parameter counts
def _parameters(fn: ast.FunctionDef) -> int:
    """Positional + keyword-only parameters, without self / cls; *args and **kwargs count
    one each."""
    a = fn.args
    positional = [p.arg for p in a.posonlyargs + a.args]
    if positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    return len(positional) + len(a.kwonlyargs) + (a.vararg is not None) + \
        (a.kwarg is not None)


def public_functions(root: Path = PACKAGE):
    """(path:line name, parameter count) of every public function and method: module-level
    functions and methods of module-level classes whose names do not start with "_"
    (closures are not API)."""
    found = []

    def visit(body, path, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not node.name.startswith("_"):
                    found.append((f"{path}:{node.lineno} {prefix}{node.name}", _parameters(node)))
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, path, f"{prefix}{node.name}.")

    for path in sorted(root.rglob("*.py")):
        visit(ast.parse(path.read_text()).body, path.relative_to(root.parent), "")
    return found


def test_parameter_counter():
    tree = ast.parse("def f(a, b=1, *args, c, d=2, **kw): pass\n"
                     "class C:\n"
                     "    def m(self, x, *, y): pass\n"
                     "    @classmethod\n"
                     "    def make(cls, z, /, w): pass\n")
    f, c = tree.body
    assert _parameters(f) == 6
    assert [_parameters(m) for m in c.body] == [2, 2]


def test_no_public_function_takes_more_than_8_parameters():
    found = public_functions()
    assert len(found) > 100                              # the walk saw the package
    assert any(name.endswith(" image_to_stereo_video") for name, _ in found)
    assert any(".validate" in name for name, _ in found)   # methods are counted too
    over = {name: n for name, n in found if n > MAX_PARAMETERS}
    assert not over, f"public functions with more than {MAX_PARAMETERS} parameters: {over}"
