"""Recipes: YAML files holding a pipeline, a target and its options, and verification
tolerances. ``recipe="optimize"`` names one shipped in ``edgecc/recipes/``.

    # edgecc recipe
    pipeline: fold-batchnorm,fuse,fixpoint(cse,eliminate-identity,dce)
    target: host
    target_options: {num_threads: 2}
    verify: {atol: 1.0e-4, rtol: 1.0e-4, samples: 3}
"""

from __future__ import annotations

import dataclasses
import os
from importlib import resources
from typing import Any

import yaml

from edgecc.errors import EdgeccError, UnknownNameError

KEYS = {"pipeline", "target", "target_options", "verify", "description"}


@dataclasses.dataclass(frozen=True)
class VerifyOptions:
    atol: float = 1e-4
    rtol: float = 1e-4
    samples: int = 3
    # Quantized programs: a value within float error of a rounding tie can take the
    # neighbouring code on the target (one quantization step), so after lossy passes the
    # artifact passes when allclose holds *or* its cosine to the simulator is >= this.
    quantized_cosine: float = 0.999

    def __post_init__(self) -> None:
        if self.atol < 0 or self.rtol < 0 or self.samples < 0:
            raise ValueError("verify tolerances and samples must be >= 0")
        if not 0 < self.quantized_cosine <= 1:
            raise ValueError("quantized_cosine must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class Recipe:
    pipeline: str | None = None
    target: str | None = None
    target_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    verify: VerifyOptions = VerifyOptions()
    source: str = ""


def builtin_recipes() -> list[str]:
    files = resources.files("edgecc").joinpath("recipes")
    return sorted(f.name[:-5] for f in files.iterdir() if f.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    if os.path.exists(name_or_path):
        path, text = name_or_path, open(name_or_path).read()
    elif name_or_path in builtin_recipes():
        path = f"edgecc/recipes/{name_or_path}.yaml"
        text = resources.files("edgecc").joinpath("recipes", f"{name_or_path}.yaml").read_text()
    elif name_or_path.endswith((".yaml", ".yml")):
        raise EdgeccError(f"recipe file '{name_or_path}' does not exist")
    else:
        raise UnknownNameError("recipe", name_or_path, builtin_recipes())
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgeccError(f"recipe '{path}' is not valid YAML{where}") from exc
    if not isinstance(data, dict):
        raise EdgeccError(f"recipe '{path}' must be a mapping with keys {sorted(KEYS)}")
    unknown = set(data) - KEYS
    if unknown:
        raise UnknownNameError(f"key in recipe '{path}'", sorted(unknown)[0], KEYS)
    try:
        verify = VerifyOptions(**(data.get("verify") or {}))
    except (TypeError, ValueError) as exc:
        raise EdgeccError(f"recipe '{path}': bad verify section: {exc}") from exc
    return Recipe(
        pipeline=data.get("pipeline"),
        target=data.get("target"),
        target_options=dict(data.get("target_options") or {}),
        verify=verify,
        source=path,
    )
