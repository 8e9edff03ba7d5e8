"""`ros2 launch cen_perception segmentation.launch.py` as the README tells users: a colcon
workspace built once from this checkout, the real Jazzy `launch_ros` and `ros2cli` (installed
by `make setup` from ../shared/ros2-launch), and a camera in the test process (the rig).

Every launch runs in a DDS domain of its own (a random ``ROS_DOMAIN_ID``, traffic kept on this
machine), so launches here and tests elsewhere on the machine never see each other; the node
keeps its documented name, ``/cen_segmentation``, with no namespace.
"""
from __future__ import annotations

import os
import pathlib
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional

import numpy as np
import pytest

from cen_perception.image_codec import encode, encode_compressed_color, encode_compressed_depth
from cen_perception_dev.rig import Camera, Rig, RigError
from cen_perception_dev.synthetic_world import SyntheticScene

REPO = pathlib.Path(__file__).resolve().parents[2]
LAUNCH_WHEELS = REPO.parent / "shared" / "ros2-launch"
# What colcon needs of the package: no tests, training code or docs.
PACKAGE_FILES = ("package.xml", "setup.py", "setup.cfg", "resource", "cen_perception", "launch",
                 "config")
# The toy engine's input size (the camera sends this size: nothing is resized).
H, W = 48, 64
BIN = pathlib.Path(sys.executable).parent


def launch_tools_missing() -> Optional[str]:
    """Why the real launch tests cannot run here, or None."""
    if not LAUNCH_WHEELS.is_dir():
        return (f"no {LAUNCH_WHEELS} (the ROS 2 launch and command-line wheels): "
                "ros2 launch is not installed")
    for tool in ("ros2", "colcon"):
        if not (BIN / tool).is_file() and shutil.which(tool) is None:
            return f"no `{tool}` in this environment: `make setup` installs it from {LAUNCH_WHEELS}"
    return None


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> pathlib.Path:
    """A colcon workspace holding this checkout's package, built once."""
    reason = launch_tools_missing()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("ros2_ws")
    package = root / "src" / "cen_perception"
    package.mkdir(parents=True)
    for name in PACKAGE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, package / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, package / name)
    result = subprocess.run(["colcon", "build", "--packages-select", "cen_perception"],
                            cwd=root, env=tool_environment(root), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout}\n{result.stderr}"
    return root


def tool_environment(root: pathlib.Path, domain: Optional[int] = None) -> dict:
    """This environment's tools first on PATH, DDS on this machine, logs in ``root``, no Fast
    DDS profile inherited (the launch file decides)."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOG_DIR"] = str(root / "ros_log")
    if domain is not None:
        env["ROS_DOMAIN_ID"] = str(domain)
    for name in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        env.pop(name, None)
    return env


class Launch:
    """``ros2 launch cen_perception segmentation.launch.py <arguments>`` in a shell that has
    sourced the workspace, in a process group of its own; ``ros2`` runs the command-line
    tools in the same environment (domain included)."""

    def __init__(self, workspace: pathlib.Path, arguments: list[str], log: pathlib.Path,
                 domain: int) -> None:
        self.workspace, self.log_path = workspace, log
        self.env = tool_environment(workspace, domain)
        self.command = "ros2 launch cen_perception segmentation.launch.py " + shlex.join(arguments)
        self._log = open(log, "w")
        self.daemon = False
        self.proc = subprocess.Popen(["bash", "-c", self.shell(self.command)], cwd=workspace,
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def shell(self, command: str) -> str:
        return f". {shlex.quote(str(self.workspace / 'install' / 'setup.bash'))} && exec {command}"

    @property
    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RigError(f"ros2 launch exited with status {self.proc.returncode}:\n"
                           f"{self.output[-3000:]}")

    def ros2(self, *arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """``ros2 <arguments>`` in the launch's environment (text output). The first call
        starts the ros2 daemon of the launch's domain, as for a user; ``stop`` stops it."""
        self.daemon = True
        return subprocess.run(["bash", "-c", self.shell("ros2 " + shlex.join(arguments))],
                              cwd=self.workspace, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def node_process(self, timeout: float = 30.0):
        """The node's process (a ``psutil.Process``), started by ``ros2 launch``."""
        import psutil

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    if any("cen_segmentation" in part for part in child.cmdline()):
                        return child
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.2)
        raise RigError(f"no node process within {timeout:g} s:\n{self.output[-3000:]}")

    def stop(self) -> Optional[int]:
        """Ctrl-C to the whole group (as a terminal sends it), then SIGKILL; the exit status."""
        if self._log.closed:
            return self.proc.returncode
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # anything the launch left behind in its group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.daemon:
            subprocess.run(["bash", "-c", self.shell("ros2 daemon stop")], cwd=self.workspace,
                           env=self.env, capture_output=True, timeout=60)
        self._log.close()
        return self.proc.returncode


class Frames:
    """The camera's synthetic RGB-D frames (the scene generator's), with the labels the toy
    engine gives for them (``floor(depth_m)``, 0..2; see test/conftest.py make_toy_onnx)."""

    def __init__(self, count: int = 4) -> None:
        scene = SyntheticScene(seed=3, height=H, width=W)
        rng = np.random.default_rng(0)
        self.images = [scene.render(i, rng)[:2] for i in range(count)]
        self.camera_info = scene.camera_info_fields()

    def message(self, index: int, header, camera: Camera):
        """The (colour, depth) messages of frame ``index`` as ``camera`` publishes them."""
        rgb, depth_mm = self.images[index % len(self.images)]
        rgb_msg = (encode(rgb, "rgb8", header) if camera.rgb_transport == "raw"
                   else encode_compressed_color(rgb, "jpeg", header))
        depth_msg = (encode(depth_mm, "16UC1", header) if camera.depth_transport == "raw"
                     else encode_compressed_depth(depth_mm, "16UC1", header))
        return rgb_msg, depth_msg

    def labels(self, index: int) -> np.ndarray:
        depth_mm = self.images[index % len(self.images)][1]
        return np.clip(np.floor(depth_mm / 1000.0), 0, 2).astype(np.uint8)


class Streaming:
    """A launch, the rig standing in for its camera, and the frames it sends."""

    def __init__(self, launch: Launch, rig: Rig, frames: Frames) -> None:
        self.launch, self.rig, self.frames = launch, rig, frames
        self.sent: dict[tuple[int, int], int] = {}  # stamp -> frame index

    def stream_until(self, predicate, timeout: float = 60.0, rate: float = 10.0) -> bool:
        """Publish frames (and the camera info, as a driver does) at ``rate`` Hz until
        ``predicate()``; its last value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.launch.check_alive()
            if predicate():
                return True
            index = len(self.sent)
            header = self.rig.header()
            self.rig.publish(*self.frames.message(index, header, self.rig.camera))
            self.rig.publish_camera_info(self.frames.camera_info, header)
            self.sent[(header.stamp.sec, header.stamp.nanosec)] = index
            self.rig.pause(1.0 / rate)
        return predicate()

    def stream(self, seconds: float, rate: float = 10.0) -> None:
        self.stream_until(lambda: False, seconds, rate)

    def outputs_after(self, kind: str, stamp: tuple[int, int]) -> list:
        """Messages of output ``kind`` for frames sent after ``stamp``."""
        with self.rig.lock:
            return [m for key, msgs in self.rig.received[kind].items() if key > stamp
                    for m in msgs]

    def last_sent(self) -> tuple[int, int]:
        return max(self.sent) if self.sent else (0, 0)


@pytest.fixture(scope="session")
def engines(toy_onnx_factory) -> dict[str, pathlib.Path]:
    """Two toy engines of the camera's size: 3 and 5 classes."""
    return {"three": toy_onnx_factory(H, W, num_classes=3),
            "five": toy_onnx_factory(H, W, num_classes=5)}


@pytest.fixture()
def launch_segmentation(workspace, tmp_path, request):
    """``launch(arguments, camera=Camera()) -> Streaming``: start ``ros2 launch`` with
    ``arguments`` and a rig on its camera topics in a fresh DDS domain; both stopped after the
    test (the launch's output is printed when the test fails)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    started = []

    def launch(arguments: list[str], camera: Camera = Camera(),
               outputs=("labels", "points", "camera_info")) -> Streaming:
        domain = random.randint(1, 200)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain,
                   signal_handler_options=SignalHandlerOptions.NO)
        running = Launch(workspace, arguments, tmp_path / f"launch{len(started)}.log", domain)
        rig = Rig("", context=context, camera=camera, outputs=outputs, name="launch_test")
        started.append((running, rig, context))
        return Streaming(running, rig, Frames())

    yield launch
    for running, rig, context in started:
        status = running.stop()
        rig.close()
        rclpy.try_shutdown(context=context)
        print(f"$ {running.command}  (exit {status})\n{running.output[-4000:]}")
