"""Real ROS 2 node tests: the node runs as its own process, the test talks to it over DDS
through the same rig the benchmark and the demo use (``cen_perception_dev.rig``).

Each node process gets a namespace of its own, so tests running at the same time on this
machine (same DDS domain or not) never see each other's topics.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import uuid

import numpy as np
import pytest

from cen_perception_dev.rig import Camera, NodeProcess, Rig, node_command

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "segmentation.yaml"


@pytest.fixture(scope="session")
def ros_context():
    """rclpy in the test process, its own context (no signal handlers of its own)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def start_node(ros_context, tmp_path_factory):
    """``start_node(*ros_args, managed=False, **camera) -> (NodeProcess, Rig)``; both stopped
    after the module. ``camera`` goes to ``Camera`` (reliability and transports)."""
    started = []

    def start(*ros_args: str, managed: bool = False, **camera) -> tuple[NodeProcess, Rig]:
        namespace = f"/t{uuid.uuid4().hex[:10]}"
        log = tmp_path_factory.mktemp("node") / "node.log"
        node = NodeProcess(ros_args, namespace, managed=managed, log_path=log, cwd=REPO)
        harness = Rig(namespace, context=ros_context, camera=Camera(**camera), name="harness")
        started.append((node, harness))
        return node, harness

    yield start
    for node, harness in started:
        node.stop(signal.SIGINT)
        harness.close()


@pytest.fixture(scope="session")
def config_file() -> pathlib.Path:
    return CONFIG


@pytest.fixture(scope="session")
def toy_labels():
    """Labels the toy model gives for depth in metres (see make_toy_onnx)."""
    def labels(depth: np.ndarray, num_classes: int = 3) -> np.ndarray:
        return np.clip(np.floor(depth), 0, num_classes - 1).astype(np.uint8)
    return labels


@pytest.fixture(scope="session")
def run_node_once():
    """Run the node to its exit: ``run(*ros_args, timeout) -> CompletedProcess`` (text)."""
    def run(*ros_args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        namespace = f"/t{uuid.uuid4().hex[:10]}"
        return subprocess.run(node_command() + ["--ros-args", "-r", f"__ns:={namespace}",
                                                *ros_args],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=dict(os.environ))
    return run
