"""The node's parameters: one table, their ROS descriptors, and the checks rclpy cannot do.

Each parameter is declared once with a ``ParameterDescriptor`` built from its row here: rclpy
then checks types, ranges and read-only itself. Choices and exclusive bounds have no place in
a descriptor, so ``check_parameter`` checks those (and words every failure the same way).
``config/segmentation.yaml`` holds exactly these keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException, ParameterException

from .engines import BACKENDS

QOS_CHOICES = ("auto", "sensor_data", "reliable")
# A 12 MP camera (4096x3072); larger messages are refused before they are decoded.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 3072


@dataclass(frozen=True)
class ParameterSpec:
    default: Any
    description: str
    choices: tuple = ()
    minimum: Optional[float] = None   # inclusive unless exclusive_minimum
    maximum: Optional[float] = None   # inclusive
    exclusive_minimum: bool = False
    live: bool = False                # may change while the node runs


PARAMETERS: dict[str, ParameterSpec] = {
    "engine_path": ParameterSpec("", "segmentation engine: an exported .onnx model or a TensorRT "
                                     ".engine/.plan with its <engine>.json model card (required; "
                                     "live: a new engine opens in the background and is swapped "
                                     "in between frames; a refused one leaves engine_path at the "
                                     "engine in service)", live=True),
    "backend": ParameterSpec("auto", "inference backend; auto picks TensorRT for .engine/.plan "
                                     "files and ONNX Runtime for .onnx", choices=BACKENDS),
    "num_threads": ParameterSpec(0, "ONNX Runtime intra-op threads (0 = one per core)",
                                 minimum=0, maximum=1024),
    "sync_slop": ParameterSpec(0.02, "largest RGB-depth stamp difference that still pairs (s)",
                               minimum=0.0, exclusive_minimum=True, maximum=10.0),
    "sync_queue_size": ParameterSpec(10, "frames per stream waiting for a partner", minimum=1,
                                     maximum=1000),
    "qos": ParameterSpec("auto", "QoS of the camera subscriptions: auto (follow the camera: "
                                 "reliable when every publisher offers reliable, else best "
                                 "effort), sensor_data (best effort) or reliable",
                         choices=QOS_CHOICES),
    "rgb_transport": ParameterSpec("raw", "colour input: raw (rgb/image, sensor_msgs/Image) or "
                                          "compressed (rgb/image/compressed, JPEG or PNG)",
                                   choices=("raw", "compressed")),
    "depth_transport": ParameterSpec("raw", "depth input: raw (depth/image) or compressedDepth "
                                            "(depth/image/compressedDepth, PNG or RVL)",
                                     choices=("raw", "compressedDepth")),
    "depth_scale": ParameterSpec(0.0, "metres per depth unit; 0 = REP 118 (16UC1 mm, 32FC1 m)",
                                 minimum=0.0, maximum=1000.0),
    "depth_timeout": ParameterSpec(0.5, "seconds without depth after which colour-only frames "
                                        "are published with depth invalid (0 = never)",
                                   minimum=0.0, maximum=3600.0),
    "stall_timeout": ParameterSpec(3.0, "seconds a camera topic with a publisher may stay "
                                        "silent (or camera info may be missing while the cloud "
                                        "is subscribed) before /diagnostics warns",
                                   minimum=0.0, exclusive_minimum=True, maximum=3600.0),
    "max_image_pixels": ParameterSpec(DEFAULT_MAX_IMAGE_PIXELS,
                                      "largest image (width x height) a camera message may "
                                      "carry; larger ones are bad messages, refused before "
                                      "decoding", minimum=1, maximum=1 << 28),
    "publish_color": ParameterSpec(True, "publish segmentation/color (palette colours)"),
    "publish_overlay": ParameterSpec(True, "publish segmentation/overlay (colours over the input)"),
    "publish_confidence": ParameterSpec(False, "publish segmentation/confidence (32FC1)"),
    "display_width": ParameterSpec(640, "width of segmentation/color and segmentation/overlay, "
                                        "the pictures people watch (camera aspect kept; 0 or "
                                        "at least the camera's width: camera size); labels, "
                                        "confidence and the cloud keep the camera's size",
                                   minimum=0, maximum=16384),
    "reduced_jpeg_decoding": ParameterSpec(True, "decode a JPEG colour image at 1/2, 1/4 or "
                                                 "1/8 of its size (libjpeg scales as it "
                                                 "decodes) when the outputs subscribed need no "
                                                 "more: the engine's input and the overlay; "
                                                 "never while segmentation/points is "
                                                 "subscribed"),
    "overlay_alpha": ParameterSpec(0.5, "weight of the palette colours in the overlay",
                                   minimum=0.0, maximum=1.0, live=True),
    "min_confidence": ParameterSpec(0.0, "pixels below this confidence are labelled 255 "
                                         "(unlabeled)", minimum=0.0, maximum=1.0, live=True),
    "cloud_stride": ParameterSpec(1, "segmentation/points keeps every N-th pixel in both "
                                     "directions", minimum=1, maximum=64),
    "cloud_max_range": ParameterSpec(0.0, "segmentation/points leaves out (NaN) points farther "
                                          "than this (m; 0 = no limit)", minimum=0.0,
                                     maximum=1e6),
    "diagnostics_period": ParameterSpec(1.0, "seconds between /diagnostics messages",
                                        minimum=0.0, exclusive_minimum=True, maximum=3600.0),
}
# Declared by rclpy itself for every node.
BUILT_IN = {"use_sim_time", "start_type_description_service"}
# Declared by the node from the engine's model card; nobody else may set it.
CLASS_NAMES = "class_names"
CLASS_NAMES_DESCRIPTION = ("class names from the engine's model card (read-only; they follow "
                           "the engine)")


def descriptor(name: str) -> ParameterDescriptor:
    """The ROS descriptor of parameter ``name``: description, range, read-only, choices."""
    spec = PARAMETERS[name]
    result = ParameterDescriptor(
        description=spec.description, read_only=not spec.live,
        additional_constraints=f"one of {', '.join(spec.choices)}" if spec.choices else "")
    if spec.minimum is not None and spec.maximum is not None:
        if isinstance(spec.default, float):
            result.floating_point_range = [FloatingPointRange(
                from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            result.integer_range = [IntegerRange(from_value=int(spec.minimum),
                                                 to_value=int(spec.maximum), step=0)]
    return result


def check_parameter(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not valid for parameter ``name`` (type aside), or None when it is."""
    spec = PARAMETERS[name]
    if spec.choices and value not in spec.choices:
        return f"parameter {name} must be one of {', '.join(spec.choices)}, got '{value}'"
    if spec.minimum is not None:
        too_small = value <= spec.minimum if spec.exclusive_minimum else value < spec.minimum
        if too_small:
            relation = ">" if spec.exclusive_minimum else ">="
            return f"parameter {name} must be {relation} {spec.minimum:g}, got {value}"
    if spec.maximum is not None and value > spec.maximum:
        return f"parameter {name} must be <= {spec.maximum:g}, got {value}"
    return None


def unknown_names(names) -> list[str]:
    """The names among ``names`` that are no parameter of the node (sorted)."""
    known = set(PARAMETERS) | {CLASS_NAMES} | BUILT_IN
    return sorted(name for name in names if name not in known)


def known_names() -> str:
    return ", ".join(sorted(set(PARAMETERS) | {CLASS_NAMES}))


def declare_all(node) -> tuple[dict[str, Any], str]:
    """Declare every parameter on ``node`` with its descriptor: (values, first problem or "").

    ``node`` is created with ``automatically_declare_parameters_from_overrides``, so every
    override is declared at first and the unknown ones can be named (rclpy offers no other
    public way to list them); each known one is then declared again with its descriptor, so
    rclpy checks its type and range. A bad override leaves the default and a problem.
    """
    overrides = {name: node.get_parameter(name).value
                 for name in node.list_parameters([], 0).names}
    problem = ""
    unknown = [name for name in unknown_names(overrides) if not name.startswith("qos_overrides.")]
    if unknown:
        problem = f"unknown parameter(s) {', '.join(unknown)} (known: {known_names()})"
    if CLASS_NAMES in overrides:
        node.undeclare_parameter(CLASS_NAMES)
        problem = ("parameter class_names is read-only: it comes from the engine's model card; "
                   "remove it from the parameters")
    values = {}
    for name in PARAMETERS:
        values[name], declare_problem = _declare(node, name, overrides)
        problem = problem or declare_problem
    return values, problem


def _declare(node, name: str, overrides: dict[str, Any]) -> tuple[Any, str]:
    if node.has_parameter(name):
        node.undeclare_parameter(name)
    default = PARAMETERS[name].default
    try:
        return node.declare_parameter(name, default, descriptor(name)).value, ""
    except ParameterException as exc:
        problem = (check_parameter(name, overrides[name])
                   if isinstance(exc, InvalidParameterValueException) else None)
        reason = exc.args[0] if exc.args else exc
        value = node.declare_parameter(name, default, descriptor(name),
                                       ignore_override=True).value
        return value, problem or f"invalid parameter {name}: {reason}"


def startup_problem(values: dict[str, Any]) -> Optional[str]:
    """Why the node cannot start with these values (choices, exclusive bounds), or None."""
    for name in PARAMETERS:
        problem = check_parameter(name, values[name])
        if problem:
            return problem
    if not values["engine_path"]:
        return "parameter engine_path is required (an exported .onnx model or a TensorRT engine)"
    return None


def live_change_problem(name: str, value: Any, has_confidence: bool) -> Optional[str]:
    """Why a change of ``name`` to ``value`` while the node runs is refused, or None.

    ``has_confidence``: the engine in service has a ``confidence`` output.
    """
    if name == CLASS_NAMES:
        return "class_names is read-only: it comes from the engine's model card"
    spec = PARAMETERS.get(name)
    if spec is None or not spec.live:
        return None  # read-only descriptors refuse those
    problem = check_parameter(name, value)
    if not problem and name == "engine_path" and not value:
        problem = "engine_path is required"
    if not problem and name == "min_confidence" and value > 0 and not has_confidence:
        problem = "the engine has no 'confidence' output"
    return problem
