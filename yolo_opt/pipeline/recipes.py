"""Recipes: YAML files naming the pipeline's stages and their keys, validated whole into option objects.

A recipe is checked completely when it is loaded (stage names and order, every key's type and range, what each
stage needs), so a bad recipe or override fails before a run folder or any stage output exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from yolo_opt.errors import ConfigError, first_line
from yolo_opt.options import (
    DEFAULT_RECIPE,
    BenchOptions,
    DeployOptions,
    PTQOptions,
    TrainOptions,
    check_ultralytics_args,
)
from yolo_opt.pipeline.recipe import Recipe
from yolo_opt.pipeline.stages import STAGES, check_order

__all__ = ["DEFAULT_RECIPE", "RECIPES_DIR", "Recipe", "available_recipes", "load_recipe"]


def _recipes_dir() -> Path:
    """The shipped recipes' folder: `yolo_opt/recipes/` in an installed wheel (the top-level `recipes/` mapped into
    the package at build time, see pyproject.toml), else the top-level `recipes/` of the checkout this package runs
    from (an editable install or PYTHONPATH)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "recipes"
    return installed if installed.is_dir() else package.parent / "recipes"


RECIPES_DIR = _recipes_dir()
PIPELINE_KEYS = {"stages", "recipe", "name", "project"}


def available_recipes() -> list[str]:
    """Names of the recipes shipped with yolo-opt."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _read(recipe: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(str(recipe))
    if path.suffix in {".yaml", ".yml"}:
        if not path.exists():
            raise ConfigError(f"recipe file not found: {path}; pass a shipped recipe name "
                              f"({', '.join(available_recipes())}) or an existing .yaml path")
    else:
        path = RECIPES_DIR / f"{recipe}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown recipe '{recipe}'; choose one of: {', '.join(available_recipes())} or a "
                              ".yaml path")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML ({first_line(e)})") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"recipe {path} must be a mapping of key: value")
    return path, cfg


def load_recipe(recipe: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Load a recipe by name (see `available_recipes`) or path, apply `overrides`, and validate all of it."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    path, cfg = _read(recipe)
    goals = ("prune", "prune_target", "prune_latency")  # how much to prune: an override of one replaces the recipe's
    if any(k in (overrides or {}) for k in goals):
        cfg = {k: v for k, v in cfg.items() if k not in goals}
    cfg = {**cfg, **(overrides or {})}
    stages = cfg.get("stages")
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.strip("[]").split(",") if s.strip()]
    if not stages or not isinstance(stages, list):
        raise ConfigError(f"recipe {path.name} needs a list of stages, e.g. stages: [baseline, prune, export]")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"recipe {path.name}: unknown stage '{unknown[0]}'; stages are: {', '.join(STAGES)}")
    cfg["stages"] = stages
    rest = {k: v for k, v in cfg.items() if k not in PIPELINE_KEYS}
    try:
        bench = BenchOptions.take(rest, "optimize")  # first: lat_imgsz is the run's, and prune_latency's too
        train = TrainOptions.take(rest)
        if train.prune.prune_latency is not None and bench.lat_imgsz:
            train = train.replace(prune=train.prune.replace(lat_imgsz=bench.lat_imgsz))
        ptq = PTQOptions.take(rest)
        deploy = DeployOptions.take(rest, "optimize")
    except ConfigError as e:
        raise ConfigError(f"recipe {path.name}: {e}") from None
    bad = [k for k in rest if k not in DEFAULT_CFG_DICT]
    if bad:
        raise ConfigError(f"recipe {path.name}: unknown key '{bad[0]}'; see 'yolo-opt help' and 'yolo cfg'")
    try:
        check_ultralytics_args(rest, "train")
    except ConfigError as e:
        raise ConfigError(f"recipe {path.name}: {e}") from None
    for key in ("imgsz", "epochs", "batch"):
        if key in rest and (isinstance(rest[key], bool) or not isinstance(rest[key], int) or rest[key] < 1):
            raise ConfigError(f"recipe {path.name}: {key}={rest[key]!r} must be a positive integer")
    if "imgsz" in rest and rest["imgsz"] % 32:
        raise ConfigError(f"recipe {path.name}: imgsz={rest['imgsz']} must be a multiple of the model stride 32, "
                          f"e.g. imgsz={(rest['imgsz'] + 31) // 32 * 32}")
    out = Recipe(path.stem, tuple(stages), train=train, ptq=ptq, bench=bench, deploy=deploy, ultralytics=rest, raw=cfg)
    check_order(out, path.name)
    return out
