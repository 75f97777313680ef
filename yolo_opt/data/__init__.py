"""Data: the generated detection dataset (the embedded default), dataset checks, calibration images and batches."""

from yolo_opt.data.checks import check_classes, check_data_arg, check_dataset, dataset_images, read_dataset
from yolo_opt.data.generate import CLASS_NAMES, make_dataset

__all__ = ["CLASS_NAMES", "check_classes", "check_data_arg", "check_dataset", "dataset_images", "make_dataset", "read_dataset"]
