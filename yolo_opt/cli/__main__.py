"""`python -m yolo_opt.cli` runs the `yolo-opt` command."""

from yolo_opt.cli import entrypoint

entrypoint()
