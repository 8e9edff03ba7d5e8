"""cen_training: build, train, evaluate and export CEN / AsymFusion RGB-D segmentation networks.

Layout, in the order data flows: ``data`` (datasets, transforms, class lists), ``models`` (the
networks), ``train`` / ``evaluate`` (the loops), ``checkpoint`` (save/load, official import),
``deploy`` (folded graph, ONNX export, fp16/INT8, TensorRT engines), ``frames`` (RGB-D frames
from files), ``commands/`` (one module per ``cen-train`` sub-command, the only place errors
become exit codes; see ``errors``).
"""
__version__ = "0.1.0"


from .errors import TrainingError


class CliError(TrainingError):
    """A command's own failure (bad options, nothing to do): ``cen-train`` prints the message as
    one line and exits non-zero. Library code raises the errors of ``cen_training.errors``."""
