"""Errors yolo-opt raises: one clear line each, printed by the CLI without a traceback."""


class YoloOptError(Exception):
    """Base class: a user-facing error whose message names the fix."""


class ConfigError(YoloOptError):
    """Bad or unknown argument."""


class ModelError(YoloOptError):
    """Missing, corrupt or unsupported model file."""


class DataError(YoloOptError):
    """Missing or malformed dataset."""


class PruneError(YoloOptError):
    """Pruning cannot be done as asked (unreachable target, unsupported layer)."""


class DeployError(YoloOptError):
    """Export, quantization or engine build cannot be done here (missing runtime, accuracy bound not met)."""


class TensorRTMissing(DeployError):
    """TensorRT is not installed on this machine (build the engine on the device from the bundle)."""


class OpenVINOMissing(DeployError):
    """OpenVINO or NNCF is not installed (they are the optional extra `yolo-opt[openvino]`)."""


class StorageError(YoloOptError):
    """The Optuna storage URL is malformed, unreachable, or its driver is missing."""
