"""The `Recipe` type: a validated recipe's stages and option objects (made by `yolo_opt.pipeline.recipes`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from yolo_opt.options import DEFAULT_IMGSZ, BenchOptions, DeployOptions, PTQOptions, TrainOptions


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: its stages, yolo-opt's option objects, and the Ultralytics arguments of its trainings."""

    name: str
    stages: tuple[str, ...]
    train: TrainOptions
    ptq: PTQOptions
    bench: BenchOptions
    deploy: DeployOptions = field(default_factory=DeployOptions)
    ultralytics: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the merged keys as given (recorded in the run's state)

    @property
    def imgsz(self) -> int:
        """Training, validation and export image size."""
        return int(self.ultralytics.get("imgsz", DEFAULT_IMGSZ))
