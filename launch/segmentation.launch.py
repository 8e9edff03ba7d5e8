"""Start the cen_segmentation node on a camera's RGB and depth topics; optionally the camera
driver itself and RViz, all with the Fast DDS profile for camera-size images.

    ros2 launch cen_perception segmentation.launch.py engine:=/path/to/model.onnx \
        camera_package:=realsense2_camera camera_launch:=rs_launch.py align_depth.enable:=true \
        rgb_topic:=/camera/camera/color/image_raw \
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw rviz:=true

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
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, GroupAction,
                            IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable)
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.launch_description_sources import AnyLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

# Fast DDS 2.x (Humble, Jazzy) reads the first, 3.x (Kilted and newer) the second.
FASTDDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


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


def generate_launch_description():
    share = get_package_share_directory("cen_perception")
    profile = os.path.join(share, "config", "fastdds_large_images.xml")
    arguments = [
        DeclareLaunchArgument(
            "engine", description="segmentation engine: an exported .onnx model, or a TensorRT "
                                  ".engine/.plan with its <engine>.json model card"),
        DeclareLaunchArgument(
            "rgb_topic", default_value="/camera/color/image_raw",
            description="colour images (rgb8, bgr8, rgba8, bgra8 or mono8)"),
        DeclareLaunchArgument(
            "depth_topic", default_value="/camera/aligned_depth_to_color/image_raw",
            description="depth images registered to the colour camera (16UC1 mm or 32FC1 m)"),
        DeclareLaunchArgument(
            "rgb_transport", default_value="raw", choices=["raw", "compressed"],
            description="raw: sensor_msgs/Image on rgb_topic; compressed: "
                        "sensor_msgs/CompressedImage on <rgb_topic>/compressed"),
        DeclareLaunchArgument(
            "depth_transport", default_value="raw", choices=["raw", "compressedDepth"],
            description="raw: sensor_msgs/Image on depth_topic; compressedDepth: "
                        "sensor_msgs/CompressedImage on <depth_topic>/compressedDepth"),
        DeclareLaunchArgument(
            "qos", default_value="auto", choices=["auto", "sensor_data", "reliable"],
            description="camera subscriptions: auto follows the camera's reliability; "
                        "sensor_data (best effort) or reliable force one"),
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "segmentation.yaml"),
            description="node parameters (qos, rgb_transport and depth_transport come from "
                        "the launch arguments)"),
        DeclareLaunchArgument(
            "fastdds_profile", default_value="true",
            description="start every process here (camera, node, RViz) with the shipped Fast "
                        "DDS profile for camera-size images (" + profile + "); false: leave "
                        "the environment as it is"),
        DeclareLaunchArgument(
            "camera_launch", default_value="",
            description="the camera driver's launch file to start here, so that it gets the "
                        "Fast DDS profile too: a path, or a file name in camera_package's "
                        "launch folder; empty: the camera runs elsewhere"),
        DeclareLaunchArgument(
            "camera_package", default_value="",
            description="package whose share/<package>/launch holds camera_launch "
                        "(e.g. realsense2_camera); empty: camera_launch is a path"),
        DeclareLaunchArgument(
            "managed", default_value="false",
            description="start the lifecycle node cen_segmentation_managed_node (unconfigured) "
                        "instead of the plain node"),
        DeclareLaunchArgument(
            "autostart", default_value="false",
            description="with managed:=true, configure and activate it from here"),
        DeclareLaunchArgument(
            "rviz", default_value="false", description="open RViz showing the overlay"),
    ]
    # Set before any process starts: the variables are read once, when rclpy/rclcpp start.
    profile_environment = [
        SetEnvironmentVariable(name, profile,
                               condition=IfCondition(LaunchConfiguration("fastdds_profile")))
        for name in FASTDDS_PROFILE_VARIABLES]
    camera = OpaqueFunction(function=include_camera)
    node_parameters = [LaunchConfiguration("params_file"),
                       {"engine_path": LaunchConfiguration("engine"),
                        "qos": LaunchConfiguration("qos"),
                        "rgb_transport": LaunchConfiguration("rgb_transport"),
                        "depth_transport": LaunchConfiguration("depth_transport")}]
    # image_transport's names: <topic>/compressed and <topic>/compressedDepth.
    node_remappings = [("rgb/image", LaunchConfiguration("rgb_topic")),
                       ("depth/image", LaunchConfiguration("depth_topic")),
                       ("rgb/image/compressed", [LaunchConfiguration("rgb_topic"), "/compressed"]),
                       ("depth/image/compressedDepth",
                        [LaunchConfiguration("depth_topic"), "/compressedDepth"])]
    segmentation = Node(
        package="cen_perception",
        executable="cen_segmentation_node",
        name="cen_segmentation",
        parameters=node_parameters,
        remappings=node_remappings,
        output="screen",
        emulate_tty=True,
        condition=UnlessCondition(LaunchConfiguration("managed")),
    )
    managed_node = LifecycleNode(
        package="cen_perception",
        executable="cen_segmentation_managed_node",
        name="cen_segmentation",
        namespace="",
        parameters=node_parameters,
        remappings=node_remappings,
        output="screen",
        emulate_tty=True,
    )

    def transition(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed_node),
                                           transition_id=transition_id))
    autostart = IfCondition(LaunchConfiguration("autostart"))
    managed = GroupAction(condition=IfCondition(LaunchConfiguration("managed")), actions=[
        managed_node,
        # Activate once configuring has ended in inactive (not after a later deactivate).
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=managed_node, start_state="configuring",
            goal_state="inactive", entities=[transition(Transition.TRANSITION_ACTIVATE)]),
            condition=autostart),
        GroupAction(condition=autostart,
                    actions=[transition(Transition.TRANSITION_CONFIGURE)]),
    ])
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "config", "segmentation.rviz")],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(arguments + profile_environment
                             + [camera, segmentation, managed, rviz])
