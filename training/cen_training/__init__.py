"""cen_training: build, train, evaluate and export CEN / AsymFusion RGB-D segmentation networks.

Layout, in the order data flows: ``data`` (datasets, transforms, class lists), ``models`` (the
networks), ``train`` / ``evaluate`` (the loops), ``checkpoint`` (save/load, official import),
``deploy`` (folded graph, ONNX export, fp16/INT8, TensorRT engines), ``frames`` (RGB-D frames
from files), ``commands/`` (one module per ``cen-train`` sub-command, the only place errors
become exit codes; see ``errors``).
"""
__version__ = "0.1.0"

# The command layer's error, importable from here as it always was; it lives with the others.
from .errors import CliError, TrainingError  # noqa: F401 - re-exported

