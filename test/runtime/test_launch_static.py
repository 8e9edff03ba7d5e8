"""What the real `ros2 launch` tests (test/launch) cannot show, checked without launch_ros or
ros2 (so a plain clone checks it too): the launch file's data agrees with the node's
parameters, its plain functions (the camera-info topic beside the colour topic, the camera's
launch file) behave, RViz opens only on request, and the params file and the RViz layout
agree with the node. The launch file is read as Python source; its plain functions run on
their own."""
import ast
import os

import pytest
import yaml

from cen_perception.parameters import CLASS_NAMES, PARAMETERS, check_parameter
from cen_perception.publishers import OUTPUT_TOPICS

CLOUD_TOPIC = OUTPUT_TOPICS["points"]
READ_ONLY_PARAMETERS = (CLASS_NAMES,)


@pytest.fixture(scope="module")
def launch_source(repo_root) -> str:
    source = (repo_root / "launch" / "segmentation.launch.py").read_text()
    compile(source, "segmentation.launch.py", "exec")
    return source


@pytest.fixture(scope="module")
def launch_tree(launch_source):
    return ast.parse(launch_source)


def calls(tree, name):
    """Every call of ``name(...)`` (a plain name or the last part of an attribute)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                found.append(node)
    return found


def keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def launch_config_names(node):
    return {c.args[0].value for c in calls(node, "LaunchConfiguration")}


def module_constant(tree, name: str):
    """The value of a module-level constant of the launch file (plain data)."""
    return next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in n.targets))


def test_launch_arguments_that_set_node_parameters_offer_the_node_choices(launch_tree):
    arguments = module_constant(launch_tree, "ARGUMENTS")
    parameter_arguments = module_constant(launch_tree, "PARAMETER_ARGUMENTS")
    assert set(parameter_arguments) <= set(PARAMETERS) - set(READ_ONLY_PARAMETERS)
    assert set(parameter_arguments.values()) <= set(arguments)
    for parameter, argument in parameter_arguments.items():
        if parameter == "engine_path":
            assert "default_value" not in arguments[argument]  # required
            continue
        # Same choices, and the node's own default, so the launch file changes nothing
        # unless asked.
        assert tuple(arguments[argument]["choices"]) == tuple(PARAMETERS[parameter].choices)
        assert arguments[argument]["default_value"] == PARAMETERS[parameter].default
    for name, options in arguments.items():
        assert options["description"], name
    assert set(module_constant(launch_tree, "REMAPPINGS").values()) <= {
        (argument, suffix) for argument in arguments for suffix in ("", "/compressed",
                                                                    "/compressedDepth")}


def launch_module_functions(source: str, *names: str) -> dict:
    """The launch file's plain functions, run without launch or launch_ros."""
    from ament_index_python.packages import get_package_share_directory

    tree = ast.parse(source)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    namespace = {"os": os, "get_package_share_directory": get_package_share_directory}
    exec(compile(ast.Module(body=functions, type_ignores=[]), "segmentation.launch.py", "exec"),
         namespace)
    return {name: namespace[name] for name in names}


@pytest.mark.parametrize("image_topic, camera_info", [
    ("/camera/camera/color/image_raw", "/camera/camera/color/camera_info"),
    ("/rgb/image_raw", "/rgb/camera_info"),
    ("/image", "/camera_info"),
    ("image_raw", "camera_info"),  # relative: resolved in the node's namespace, as the image
    ("front/color/image_rect", "front/color/camera_info"),
])
def test_camera_info_topic_defaults_to_the_one_beside_the_colour_topic(launch_source,
                                                                       image_topic, camera_info):
    """image_transport's convention (its getCameraInfoTopic): same namespace, ``camera_info``."""
    beside = launch_module_functions(launch_source, "camera_info_beside")["camera_info_beside"]
    assert beside(image_topic) == camera_info


def test_launch_includes_the_camera_launch_file_only_when_named(launch_tree, launch_source,
                                                                tmp_path, monkeypatch):
    include = next(n for n in ast.walk(launch_tree)
                   if isinstance(n, ast.FunctionDef) and n.name == "include_camera")
    assert launch_config_names(include) == {"camera_launch", "camera_package"}
    (included,) = calls(include, "IncludeLaunchDescription")
    assert calls(included, "AnyLaunchDescriptionSource")  # .py, .xml or .yaml launch files
    (opaque,) = calls(launch_tree, "OpaqueFunction")
    assert keyword(opaque, "function").id == "include_camera"
    arguments = module_constant(launch_tree, "ARGUMENTS")
    for name in ("camera_launch", "camera_package"):
        assert arguments[name]["default_value"] == ""

    # A camera package installed in an ament prefix, as colcon installs one.
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "my_camera").write_text("")
    (prefix / "share" / "my_camera" / "launch").mkdir(parents=True)
    (prefix / "share" / "my_camera" / "launch" / "camera.launch.py").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    camera_launch_file = launch_module_functions(launch_source,
                                                 "camera_launch_file")["camera_launch_file"]
    in_package = prefix / "share" / "my_camera" / "launch" / "camera.launch.py"
    assert camera_launch_file("camera.launch.py", "my_camera") == str(in_package)
    assert camera_launch_file(str(in_package), "") == str(in_package)
    with pytest.raises(RuntimeError, match="camera launch file not found: .*missing.launch.py"):
        camera_launch_file("missing.launch.py", "my_camera")
    with pytest.raises(RuntimeError, match="camera launch file not found"):
        camera_launch_file(str(tmp_path / "missing.launch.py"), "")
    from ament_index_python.packages import PackageNotFoundError
    with pytest.raises(PackageNotFoundError):
        camera_launch_file("rs_launch.py", "no_such_camera_package")


def test_launch_opens_rviz_only_on_request(launch_tree):
    rviz = [c for c in calls(launch_tree, "Node")
            if ast.literal_eval(keyword(c, "executable")) == "rviz2"]
    assert len(rviz) == 1
    condition = keyword(rviz[0], "condition")
    assert calls(condition, "IfCondition") and launch_config_names(condition) == {"rviz"}
    strings = {n.value for n in ast.walk(keyword(rviz[0], "arguments"))
               if isinstance(n, ast.Constant)}
    assert {"-d", "segmentation.rviz"} <= strings


def test_params_file_holds_exactly_the_node_parameters(repo_root):
    data = yaml.safe_load((repo_root / "config" / "segmentation.yaml").read_text())
    assert list(data) == ["/**"]
    params = data["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    assert not set(params) & set(READ_ONLY_PARAMETERS)
    for name, value in params.items():
        # The YAML type is the declared type (rclpy refuses 1 for a double).
        assert type(value) is type(PARAMETERS[name].default), name
        assert check_parameter(name, value) is None, name


def test_rviz_layout_shows_the_node_overlay_and_cloud(repo_root):
    layout = yaml.safe_load((repo_root / "config" / "segmentation.rviz").read_text())
    displays = layout["Visualization Manager"]["Displays"]
    topics = {d["Name"]: (d["Topic"]["Value"], d["Enabled"]) for d in displays if "Topic" in d}
    assert topics, "no display subscribes to a topic"
    node_topics = {f"/{topic}" for topic in OUTPUT_TOPICS.values()}
    assert {topic for topic, _ in topics.values()} <= node_topics
    assert (f"/{OUTPUT_TOPICS['overlay']}", True) in topics.values()
    cloud = [d for d in displays if d.get("Topic", {}).get("Value") == f"/{CLOUD_TOPIC}"]
    assert len(cloud) == 1 and cloud[0]["Enabled"]
    assert cloud[0]["Class"] == "rviz_default_plugins/PointCloud2"
    assert (cloud[0]["Color Transformer"], cloud[0]["Channel Name"]) == ("Intensity", "label")
    for display in displays:
        assert display["Class"].startswith("rviz_default_plugins/")
