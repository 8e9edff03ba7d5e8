"""cen_training: build, train, evaluate and export CEN / AsymFusion RGB-D segmentation networks.

Layout: ``models`` (the networks), ``checkpoint`` (save/load, official import), ``data``
(datasets and transforms), ``train``/``evaluate`` (loops), ``export`` (ONNX), ``tensorrt_build``
(engines), ``commands/`` (one module per ``cen-train`` sub-command).
"""
__version__ = "0.1.0"


class CliError(Exception):
    """A user-facing failure: ``cen-train`` prints the message as one line and exits non-zero."""
