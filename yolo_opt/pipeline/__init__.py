"""The pipeline: recipes (validated whole), one stage registry, the resumable run folder, and the demo.

    recipes  load and validate a recipe into option objects
    stages   the stage registry (baseline, prune, qat, export, ptq, bundle, engine, benchmark)
    run      `optimize()`: the resumable run and its state.json
    demo     `yolo-opt demo`: generated data -> small baseline -> a recipe
"""

from yolo_opt.pipeline.recipes import DEFAULT_RECIPE, Recipe, available_recipes, load_recipe
from yolo_opt.pipeline.run import optimize

__all__ = ["DEFAULT_RECIPE", "Recipe", "available_recipes", "load_recipe", "optimize"]
