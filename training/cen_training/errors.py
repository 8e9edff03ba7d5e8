"""The training package's own errors.

Library code raises these; only the command layer (``cen_training.cli``) turns them into one
line and an exit status. Each message is written for a person: what is wrong and where.
"""


class TrainingError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(TrainingError):
    """Options or a model / training configuration that cannot work."""


class DatasetError(TrainingError):
    """A dataset, label file, class file or bag that cannot be read as asked."""


class CheckpointError(TrainingError):
    """A checkpoint that is missing, corrupt, foreign, or does not fit the model."""


class ExportError(TrainingError):
    """An export whose graph breaks the engine contract or fails its parity check."""


class EngineBuildError(TrainingError):
    """A TensorRT engine that cannot be built here (environment, options or graph)."""


__all__ = ["TrainingError", "ConfigError", "DatasetError", "CheckpointError", "ExportError",
           "EngineBuildError"]
