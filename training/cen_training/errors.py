"""The training package's own errors, and the exit statuses ``cen-train`` ends with.

Library code raises these; only the command layer (``cen_training.cli``) turns them into one
line and an exit status. Each message is written for a person: what is wrong and where.
``TrainingError`` is the root: every error the package raises on purpose derives from it.
"""


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


# Exit statuses of every ``cen-train`` command (``cen-train --help`` lists them).
EXIT_OK = 0  # done; or the check or gate passed
EXIT_REFUSED = 1  # ran, and a gate or check says no (compare's gate, gpu-check's parts)
EXIT_ERROR = 2  # could not do what was asked: bad options or input (any TrainingError)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


def one_line(exc: BaseException) -> str:
    """An exception's message as one line, for error messages that quote a library's error:
    its first non-empty line with runs of spaces collapsed, or the exception's type name when
    the message is empty."""
    for line in str(exc).splitlines():
        if line.strip():
            return " ".join(line.split())
    return type(exc).__name__


__all__ = ["TrainingError", "CliError", "ConfigError", "DatasetError", "CheckpointError",
           "ExportError", "EngineBuildError", "EXIT_OK", "EXIT_REFUSED", "EXIT_ERROR",
           "EXIT_INTERRUPTED", "one_line"]
