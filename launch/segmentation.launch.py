"""Start the cen_segmentation node on a camera's RGB and depth topics, and RViz on request.

    ros2 launch cen_perception segmentation.launch.py engine:=/path/to/model.onnx \
        rgb_topic:=/camera/color/image_raw \
        depth_topic:=/camera/aligned_depth_to_color/image_raw rviz:=true

Depth should be registered to the colour camera (same size and viewpoint); other sizes are
resized with a warning.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("cen_perception")
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
            "params_file", default_value=os.path.join(share, "config", "segmentation.yaml"),
            description="node parameters"),
        DeclareLaunchArgument(
            "rviz", default_value="false", description="open RViz showing the overlay"),
    ]
    segmentation = Node(
        package="cen_perception",
        executable="cen_segmentation_node",
        name="cen_segmentation",
        parameters=[LaunchConfiguration("params_file"),
                    {"engine_path": LaunchConfiguration("engine")}],
        remappings=[("rgb/image", LaunchConfiguration("rgb_topic")),
                    ("depth/image", LaunchConfiguration("depth_topic"))],
        output="screen",
        emulate_tty=True,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "config", "segmentation.rviz")],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(arguments + [segmentation, rviz])
