"""The training package's own errors, and the exit statuses ``cen-train`` ends with.

Library code raises these; only the command layer (``cen_training.cli``) turns them into one
line and an exit status. Each message is written for a person: what is wrong and where.
``TrainingError`` is the root: every error the package raises on purpose derives from it.
"""

# Exit statuses and the one-line form of an exception: the same for every console script of
# the repository (cen_perception.errors).
from cen_perception.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, one_line


class TrainingError(Exception):
    """Base of every error this package raises on purpose."""


class CliError(TrainingError):
    """A command's own failure (bad options, nothing to do): ``cen-train`` prints the message as
    one line and exits with ``EXIT_ERROR``. Library code raises the other errors of this
    module."""


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


__all__ = ["TrainingError", "CliError", "ConfigError", "DatasetError", "CheckpointError",
           "ExportError", "EngineBuildError", "EXIT_OK", "EXIT_REFUSED", "EXIT_ERROR",
           "EXIT_INTERRUPTED", "one_line"]
