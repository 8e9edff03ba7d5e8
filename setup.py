"""ROS 2 ament_python package `cen_perception`: what a robot runs (node, engines, codecs, bag
commands). The developers' tools (rig, benchmarks, synthetic world) are the separate package in
dev/, which a robot does not install.

Installs the Python package, the ament index marker, package.xml, and the launch and
config files into share/cen_perception, as `colcon build` expects. The same file works
with plain `pip install` outside a ROS workspace.
"""
from glob import glob

from setuptools import find_packages, setup

package_name = "cen_perception"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    package_data={package_name: ["fastdds_large_images.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.rviz")
         + [f"{package_name}/fastdds_large_images.xml"]),
    ],
    # The node and its core modules need only these (and rclpy with the message packages,
    # which come from ROS 2, not from pip).
    install_requires=["numpy>=1.24", "opencv-python-headless>=4.8"],
    extras_require={
        # CPU default backend.
        "onnxruntime": ["onnxruntime>=1.17"],
        # TensorRT itself comes from JetPack or NVIDIA's index; cuda-python gives the buffers.
        # cuda-python 13 needs a CUDA 13 driver (580+): JetPack 6 and CUDA 12 TensorRT
        # machines take 12.x; `tensorrt-cu13` for TensorRT built for CUDA 13.
        "tensorrt": ["cuda-python>=12,<13"],
        "tensorrt-cu13": ["cuda-python>=13,<14"],
        # The bag commands (cen-perception-bag, cen-perception-play): recorded bags.
        "bag": ["rosbags>=0.10", "tqdm>=4.60"],
        "tools": ["rosbags>=0.10", "tqdm>=4.60"],  # the former name of "bag"
    },
    zip_safe=True,
    maintainer="cen_perception maintainers",
    maintainer_email="maintainers@cen-perception.dev",
    description="RGB-D semantic segmentation node (CEN) for ROS 2",
    license="MIT",
    entry_points={
        "console_scripts": [
            "cen_segmentation_node = cen_perception.node:main",
            "cen_segmentation_managed_node = cen_perception.node:main_managed",
            "cen-perception-bag = cen_perception.bags.segment:main",
            "cen-perception-play = cen_perception.bags.player:main",
        ],
    },
)
