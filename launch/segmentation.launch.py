"""Start the cen_segmentation node on a camera's RGB and depth topics (and the colour camera's
info, for the labelled cloud); optionally the camera driver itself and RViz, all with the
Fast DDS profile for camera-size images.

    ros2 launch cen_perception segmentation.launch.py engine:=/path/to/model.onnx \
        camera_package:=realsense2_camera camera_launch:=rs_launch.py align_depth.enable:=true \
        rgb_topic:=/camera/camera/color/image_raw \
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw rviz:=true

``camera_info_topic`` follows image_transport's convention by default: the ``camera_info``
beside the colour image topic (``/camera/camera/color/image_raw`` ->
``/camera/camera/color/camera_info``), as camera drivers publish it; name another topic to
override. Without camera info the node publishes no ``segmentation/points`` and no
``segmentation/camera_info``.

``managed:=true`` starts the lifecycle variant (``cen_segmentation_managed_node``) unconfigured,
for a lifecycle manager or ``ros2 lifecycle set``; ``autostart:=true`` configures and
activates it from here.

Camera-size images cross between processes through the *publisher's* Fast DDS shared-memory
segment, so a camera driver started elsewhere only benefits from the profile when its own
shell exported it. Started from here (``camera_launch``), it gets the profile with every other
process (``fastdds_profile:=true``, the default, sets ``FASTRTPS_DEFAULT_PROFILES_FILE`` for
Fast DDS 2.x, Humble and Jazzy, and ``FASTDDS_DEFAULT_PROFILES_FILE`` for Fast DDS 3.x, Kilted
and newer; ``fastdds_profile:=false`` leaves the environment as it is). Arguments not declared
here (``align_depth.enable:=true`` above) reach the camera's launch file.

Depth should be registered to the colour camera (same size and viewpoint); other sizes are
resized with a warning. ``rgb_transport:=compressed`` / ``depth_transport:=compressedDepth``
subscribe to image_transport's ``<rgb_topic>/compressed`` / ``<depth_topic>/compressedDepth``.
``qos``, ``rgb_transport`` and ``depth_transport`` override the params file.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.launch_description_sources import AnyLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription, Substitution

# Fast DDS 2.x (Humble, Jazzy) reads the first, 3.x (Kilted and newer) the second.
FASTDDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")

# Launch arguments, in the order `ros2 launch -s` lists them: name -> DeclareLaunchArgument's
# keywords. `launch_arguments` adds the defaults that are not plain strings (camera_info_topic,
# params_file) and fastdds_profile, whose description names the installed profile.
ARGUMENTS = {
    "engine": {"description": "segmentation engine: an exported .onnx model, or a TensorRT "
                              ".engine/.plan with its <engine>.json model card"},
    "rgb_topic": {"default_value": "/camera/color/image_raw",
                  "description": "colour images (rgb8, bgr8, rgba8, bgra8 or mono8)"},
    "depth_topic": {"default_value": "/camera/aligned_depth_to_color/image_raw",
                    "description": "depth images registered to the colour camera (16UC1 mm or "
                                   "32FC1 m)"},
    "camera_info_topic": {"description": "the colour camera's sensor_msgs/CameraInfo, for "
                                         "segmentation/points and segmentation/camera_info "
                                         "(image_transport's convention by default)"},
    "rgb_transport": {"default_value": "raw", "choices": ["raw", "compressed"],
                      "description": "raw: sensor_msgs/Image on rgb_topic; compressed: "
                                     "sensor_msgs/CompressedImage on <rgb_topic>/compressed"},
    "depth_transport": {"default_value": "raw", "choices": ["raw", "compressedDepth"],
                        "description": "raw: sensor_msgs/Image on depth_topic; compressedDepth: "
                                       "sensor_msgs/CompressedImage on "
                                       "<depth_topic>/compressedDepth"},
    "qos": {"default_value": "auto", "choices": ["auto", "sensor_data", "reliable"],
            "description": "camera subscriptions: auto follows the camera's reliability; "
                           "sensor_data (best effort) or reliable force one"},
    "params_file": {"description": "node parameters (qos, rgb_transport and depth_transport "
                                   "come from the launch arguments)"},
    "camera_launch": {"default_value": "",
                      "description": "the camera driver's launch file to start here, so that it "
                                     "gets the Fast DDS profile too: a path, or a file name in "
                                     "camera_package's launch folder; empty: the camera runs "
                                     "elsewhere"},
    "camera_package": {"default_value": "",
                       "description": "package whose share/<package>/launch holds "
                                      "camera_launch (e.g. realsense2_camera); empty: "
                                      "camera_launch is a path"},
    "managed": {"default_value": "false",
                "description": "start the lifecycle node cen_segmentation_managed_node "
                               "(unconfigured) instead of the plain node"},
    "autostart": {"default_value": "false",
                  "description": "with managed:=true, configure and activate it from here"},
    "rviz": {"default_value": "false", "description": "open RViz showing the overlay"},
}
# Node parameters set from launch arguments (the rest come from params_file).
PARAMETER_ARGUMENTS = {"engine_path": "engine", "qos": "qos", "rgb_transport": "rgb_transport",
                       "depth_transport": "depth_transport"}
# The node's input topics -> (launch argument, suffix): image_transport's names,
# <topic>/compressed and <topic>/compressedDepth, for the compressed inputs.
REMAPPINGS = {"rgb/image": ("rgb_topic", ""),
              "depth/image": ("depth_topic", ""),
              "rgb/image/compressed": ("rgb_topic", "/compressed"),
              "depth/image/compressedDepth": ("depth_topic", "/compressedDepth"),
              "rgb/camera_info": ("camera_info_topic", "")}


def camera_info_beside(image_topic: str) -> str:
    """image_transport's camera-info topic of ``image_topic``: ``camera_info`` in the same
    namespace (``/camera/color/image_raw`` -> ``/camera/color/camera_info``)."""
    namespace, slash, _ = image_topic.rpartition("/")
    return namespace + slash + "camera_info"


class CameraInfoBeside(Substitution):
    """``camera_info_beside`` of a topic given as substitutions, resolved at launch."""

    def __init__(self, image_topic) -> None:
        super().__init__()
        self.image_topic = normalize_to_list_of_substitutions(image_topic)

    def describe(self) -> str:
        return "camera_info beside " + "".join(s.describe() for s in self.image_topic)

    def perform(self, context) -> str:
        return camera_info_beside(perform_substitutions(context, self.image_topic))


def launch_arguments(share: str, profile: str) -> list:
    """``ARGUMENTS`` declared, with the defaults that depend on other arguments or on where
    the package is installed."""
    defaults = {"camera_info_topic": CameraInfoBeside(LaunchConfiguration("rgb_topic")),
                "params_file": os.path.join(share, "config", "segmentation.yaml")}
    arguments = []
    for name, options in ARGUMENTS.items():
        if name in defaults:
            options = dict(options, default_value=defaults[name])
        arguments.append(DeclareLaunchArgument(name, **options))
    arguments.append(DeclareLaunchArgument(
        "fastdds_profile", default_value="true",
        description="start every process here (camera, node, RViz) with the shipped Fast DDS "
                    f"profile for camera-size images ({profile}); false: leave the "
                    "environment as it is"))
    return arguments


def camera_launch_file(camera_launch: str, camera_package: str) -> str:
    """The camera's launch file: a path, or a file in ``<camera_package>/share/.../launch``."""
    if camera_package:
        path = os.path.join(get_package_share_directory(camera_package), "launch",
                            camera_launch)
    else:
        path = os.path.abspath(os.path.expanduser(camera_launch))
    if not os.path.isfile(path):
        raise RuntimeError(f"camera launch file not found: {path}")
    return path


def include_camera(context):
    """The camera driver's launch file, when ``camera_launch`` names one."""
    camera_launch = LaunchConfiguration("camera_launch").perform(context)
    if not camera_launch:
        return []
    path = camera_launch_file(camera_launch, LaunchConfiguration("camera_package").perform(context))
    return [IncludeLaunchDescription(AnyLaunchDescriptionSource(path))]


def node_options() -> dict:
    """What the plain and the managed node share: name, parameters, remappings, output."""
    parameters = [LaunchConfiguration("params_file"),
                  {name: LaunchConfiguration(argument)
                   for name, argument in PARAMETER_ARGUMENTS.items()}]
    remappings = [(topic, [LaunchConfiguration(argument)] + ([suffix] if suffix else []))
                  for topic, (argument, suffix) in REMAPPINGS.items()]
    return dict(package="cen_perception", name="cen_segmentation", parameters=parameters,
                remappings=remappings, output="screen", emulate_tty=True)


def managed_group(managed_node: LifecycleNode) -> GroupAction:
    """The lifecycle node (with managed:=true), configured and activated on autostart:=true."""
    def transition(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed_node),
                                           transition_id=transition_id))
    autostart = IfCondition(LaunchConfiguration("autostart"))
    return GroupAction(condition=IfCondition(LaunchConfiguration("managed")), actions=[
        managed_node,
        # Activate once configuring has ended in inactive (not after a later deactivate).
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=managed_node, start_state="configuring",
            goal_state="inactive", entities=[transition(Transition.TRANSITION_ACTIVATE)]),
            condition=autostart),
        GroupAction(condition=autostart,
                    actions=[transition(Transition.TRANSITION_CONFIGURE)]),
    ])


def generate_launch_description():
    share = get_package_share_directory("cen_perception")
    profile = os.path.join(share, "config", "fastdds_large_images.xml")
    # Set before any process starts: the variables are read once, when rclpy/rclcpp start.
    profile_environment = [
        SetEnvironmentVariable(name, profile,
                               condition=IfCondition(LaunchConfiguration("fastdds_profile")))
        for name in FASTDDS_PROFILE_VARIABLES]
    camera = OpaqueFunction(function=include_camera)
    segmentation = Node(executable="cen_segmentation_node",
                        condition=UnlessCondition(LaunchConfiguration("managed")),
                        **node_options())
    managed = managed_group(LifecycleNode(executable="cen_segmentation_managed_node",
                                          namespace="", **node_options()))
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2",
                arguments=["-d", os.path.join(share, "config", "segmentation.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription(launch_arguments(share, profile) + profile_environment
                             + [camera, segmentation, managed, rviz])
