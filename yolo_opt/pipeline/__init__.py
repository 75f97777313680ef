"""The pipeline: recipes (validated whole), one stage registry, the resumable run folder, and the demo.

    recipe   the `Recipe` type; recipes: load and validate a recipe into one
    state    a run folder: its lock and state.json
    stages   the stage registry (baseline, prune, qat, export, ptq, bundle, engine, benchmark)
    run      `optimize()`: the resumable run
    demo     `yolo-opt demo`: generated data -> small baseline -> a recipe
"""

from yolo_opt.pipeline.recipes import DEFAULT_RECIPE, Recipe, available_recipes, load_recipe
from yolo_opt.pipeline.run import optimize

__all__ = ["DEFAULT_RECIPE", "Recipe", "available_recipes", "load_recipe", "optimize"]
