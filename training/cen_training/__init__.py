"""cen_training: build, train, evaluate and export CEN / AsymFusion RGB-D segmentation networks.

Layout: ``models`` (the networks), ``checkpoint`` (save/load, official import), ``data``
(datasets and transforms), ``train``/``evaluate`` (loops), ``export`` (ONNX), ``tensorrt_build``
(engines), ``commands/`` (one module per ``cen-train`` sub-command).
"""
__version__ = "0.1.0"


from .errors import TrainingError


class CliError(TrainingError):
    """A command's own failure (bad options, nothing to do): ``cen-train`` prints the message as
    one line and exits non-zero. Library code raises the errors of ``cen_training.errors``."""
