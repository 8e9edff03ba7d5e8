"""cen_training: build, train, evaluate and export CEN / AsymFusion RGB-D segmentation networks.

Layout: ``data`` (datasets, transforms, class lists, RGB-D frame files, the synthetic set) and
``models`` (the networks) feed one subpackage per flow: ``segmentation`` (the CEN recipe's
loop, evaluation, metrics), ``translation`` (image-to-image translation), ``retraining`` (frames
from a robot's bags, selection, CVAT labels, model comparison), ``deploy`` (folded graph, ONNX
export, fp16/INT8, TensorRT engines) and ``benchmarks``. ``loop`` is the plumbing both training
loops share, ``checkpoint`` saves and loads (and imports official weights), ``errors`` holds
every error and the exit statuses, ``commands/`` has one module per ``cen-train`` sub-command,
the only place errors become exit codes.
"""
__version__ = "0.1.0"

# The command layer's error, importable from here as it always was; it lives with the others.
from .errors import CliError, TrainingError

__all__ = ["CliError", "TrainingError", "__version__"]

