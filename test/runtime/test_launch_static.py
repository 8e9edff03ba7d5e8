"""The launch file, the params file and the RViz layout agree with the node (launch_ros is not
needed: the launch file is read as Python source, and its plain functions run on their own)."""
import ast
import os

import pytest
import yaml

from cen_perception.input_health import PROFILE_FILE, PROFILE_VARIABLES
from cen_perception.node import (CLOUD_TOPIC, INPUT_TOPICS, NODE_NAME, OUTPUT_TOPICS,
                                 PARAMETERS,
                                 READ_ONLY_PARAMETERS, check_parameter)

# Parameters the launch file sets from its own arguments (the rest come from params_file).
LAUNCH_PARAMETERS = {"engine_path": "engine", "qos": "qos", "rgb_transport": "rgb_transport",
                     "depth_transport": "depth_transport"}
# image_transport's topic names for the compressed inputs.
COMPRESSED_INPUTS = {"rgb/image/compressed": ("rgb_topic", "/compressed"),
                     "depth/image/compressedDepth": ("depth_topic", "/compressedDepth")}


@pytest.fixture(scope="module")
def setup_entry_points(repo_root) -> set[str]:
    """Console script names setup.py installs."""
    tree = ast.parse((repo_root / "setup.py").read_text())
    scripts = next(n for n in ast.walk(tree) if isinstance(n, ast.Dict)
                   and "console_scripts" in [getattr(k, "value", None) for k in n.keys])
    entries = scripts.values[[k.value for k in scripts.keys].index("console_scripts")]
    return {ast.literal_eval(e).split("=")[0].strip() for e in entries.elts}


@pytest.fixture(scope="module")
def launch_tree(repo_root):
    source = (repo_root / "launch" / "segmentation.launch.py").read_text()
    compile(source, "segmentation.launch.py", "exec")
    return ast.parse(source)


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


def segmentation_node(tree, executable="cen_segmentation_node", action="Node"):
    nodes = [c for c in calls(tree, action)
             if ast.literal_eval(keyword(c, "executable")) == executable]
    assert len(nodes) == 1
    return nodes[0]


def assigned(tree, variable: str):
    """The expression assigned to ``variable`` in the launch file."""
    return next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == variable for t in n.targets))


def node_keyword(tree, call, name):
    """A keyword argument of ``call``, through the variable it names (shared by both nodes)."""
    value = keyword(call, name)
    return assigned(tree, value.id) if isinstance(value, ast.Name) else value


NODES = [("cen_segmentation_node", "Node"), ("cen_segmentation_managed_node", "LifecycleNode")]


def declared_arguments(tree) -> dict[str, ast.Call]:
    return {c.args[0].value: c for c in calls(tree, "DeclareLaunchArgument")}


def test_launch_arguments(launch_tree):
    declared = set(declared_arguments(launch_tree))
    assert declared == {"engine", "rgb_topic", "depth_topic", "rgb_transport", "depth_transport",
                        "qos", "params_file", "fastdds_profile", "camera_launch",
                        "camera_package", "managed", "autostart", "rviz"}
    # Every LaunchConfiguration used is one of the declared arguments.
    assert launch_config_names(launch_tree) <= declared
    params_file = next(c for c in calls(launch_tree, "DeclareLaunchArgument")
                       if c.args[0].value == "params_file")
    default = keyword(params_file, "default_value")
    strings = {n.value for n in ast.walk(default) if isinstance(n, ast.Constant)}
    assert {"config", "segmentation.yaml"} <= strings


@pytest.mark.parametrize("executable, action", NODES)
def test_launch_node_sets_only_declared_parameters(launch_tree, setup_entry_points, executable,
                                                   action):
    node = segmentation_node(launch_tree, executable, action)
    assert executable in setup_entry_points
    assert ast.literal_eval(keyword(node, "package")) == "cen_perception"
    assert ast.literal_eval(keyword(node, "name")) == NODE_NAME
    parameters = node_keyword(launch_tree, node, "parameters")
    set_values = {}
    for element in parameters.elts:
        if isinstance(element, ast.Dict):
            set_values.update({ast.literal_eval(k): launch_config_names(v)
                               for k, v in zip(element.keys, element.values)})
    assert set_values == {name: {argument} for name, argument in LAUNCH_PARAMETERS.items()}
    assert set(set_values) <= set(PARAMETERS)
    assert launch_config_names(parameters) == {"params_file"} | set(LAUNCH_PARAMETERS.values())


def test_launch_argument_choices_and_defaults_are_the_node_parameters(launch_tree):
    declared = declared_arguments(launch_tree)
    for parameter, argument in LAUNCH_PARAMETERS.items():
        if parameter == "engine_path":
            continue
        call = declared[argument]
        choices = ast.literal_eval(keyword(call, "choices"))
        assert tuple(choices) == tuple(PARAMETERS[parameter].choices), argument
        # The default is the node's own, so the launch file changes nothing unless asked.
        assert ast.literal_eval(keyword(call, "default_value")) == PARAMETERS[parameter].default


@pytest.mark.parametrize("executable, action", NODES)
def test_launch_remaps_the_node_inputs_raw_and_compressed(launch_tree, executable, action):
    remappings = node_keyword(launch_tree, segmentation_node(launch_tree, executable, action),
                              "remappings")
    remapped = {}
    for pair in remappings.elts:
        target = pair.elts[1]
        # [LaunchConfiguration("rgb_topic"), "/compressed"] is the topic plus a suffix.
        parts = target.elts if isinstance(target, ast.List) else [target]
        suffix = "".join(p.value for p in parts if isinstance(p, ast.Constant))
        remapped[ast.literal_eval(pair.elts[0])] = (launch_config_names(target), suffix)
    expected = {INPUT_TOPICS["rgb"]: ({"rgb_topic"}, ""),
                INPUT_TOPICS["depth"]: ({"depth_topic"}, "")}
    expected.update({name: ({argument}, suffix)
                     for name, (argument, suffix) in COMPRESSED_INPUTS.items()})
    assert remapped == expected
    # The compressed inputs are the raw ones plus image_transport's suffix.
    assert {INPUT_TOPICS["rgb"] + "/compressed", INPUT_TOPICS["depth"] + "/compressedDepth"} \
        == set(COMPRESSED_INPUTS)


def test_launch_starts_one_of_the_two_nodes_and_transitions_the_managed_one_on_request(
        launch_tree):
    declared = declared_arguments(launch_tree)
    for name in ("managed", "autostart"):
        assert ast.literal_eval(keyword(declared[name], "default_value")) == "false"
    plain = segmentation_node(launch_tree)
    condition = keyword(plain, "condition")
    assert calls(condition, "UnlessCondition") and launch_config_names(condition) == {"managed"}
    # The lifecycle node sits in a group that only runs with managed:=true ...
    group = next(c for c in calls(launch_tree, "GroupAction")
                 if launch_config_names(keyword(c, "condition")) == {"managed"})
    assert calls(keyword(group, "condition"), "IfCondition")
    lifecycle = segmentation_node(launch_tree, "cen_segmentation_managed_node", "LifecycleNode")
    assert lifecycle in [assigned(launch_tree, element.id)
                         for element in keyword(group, "actions").elts
                         if isinstance(element, ast.Name)]
    # ... with configure and, once configuring has ended, activate, both only on autostart.
    emitted = {}
    for change in calls(group, "transition"):
        (transition,) = change.args
        emitted[transition.attr] = change
    assert set(emitted) == {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"}
    (handler,) = calls(group, "OnStateTransition")
    assert ast.literal_eval(keyword(handler, "start_state")) == "configuring"
    assert ast.literal_eval(keyword(handler, "goal_state")) == "inactive"
    assert emitted["TRANSITION_ACTIVATE"] in ast.walk(keyword(handler, "entities"))
    autostart = assigned(launch_tree, "autostart")
    assert calls(autostart, "IfCondition") and launch_config_names(autostart) == {"autostart"}
    guarded = [n for n in ast.walk(group) if isinstance(n, ast.Call)
               and isinstance(keyword(n, "condition"), ast.Name)
               and keyword(n, "condition").id == "autostart"]
    assert emitted["TRANSITION_CONFIGURE"] in [x for g in guarded for x in ast.walk(g)]
    assert any(handler in ast.walk(g) for g in guarded)


def launch_description_order(tree) -> list[str]:
    """Names of the variables the returned LaunchDescription is built from, in order."""
    generate = next(n for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description")
    returned = next(n for n in ast.walk(generate) if isinstance(n, ast.Return))
    (argument,) = returned.value.args
    names = [n for n in ast.walk(argument) if isinstance(n, ast.Name)]
    return [n.id for n in sorted(names, key=lambda n: (n.lineno, n.col_offset))]


def test_launch_sets_the_fastdds_profile_for_every_process_it_starts(launch_tree, repo_root):
    settings = calls(launch_tree, "SetEnvironmentVariable")
    assert len(settings) == 1  # one call in a loop over the variable names
    loop = next(n for n in ast.walk(launch_tree) if isinstance(n, ast.ListComp)
                and settings[0] in ast.walk(n))
    names = ast.literal_eval(assigned(launch_tree, loop.generators[0].iter.id))
    # Fast DDS 2.x reads the first name, 3.x the second: both, as the node's remedy says.
    assert tuple(names) == PROFILE_VARIABLES
    condition = keyword(settings[0], "condition")
    assert calls(condition, "IfCondition") and launch_config_names(condition) == {"fastdds_profile"}
    assert ast.literal_eval(keyword(declared_arguments(launch_tree)["fastdds_profile"],
                                    "default_value")) == "true"
    # The value is the installed copy of the shipped profile ...
    strings = [n.value for n in ast.walk(assigned(launch_tree, "profile"))
               if isinstance(n, ast.Constant)]
    assert strings == ["config", PROFILE_FILE.name]
    assert PROFILE_FILE.is_file()
    setup = (repo_root / "setup.py").read_text()
    assert '(f"share/{package_name}/config"' in setup
    assert f'[f"{{package_name}}/{PROFILE_FILE.name}"]' in setup
    # ... set before the camera, the node and RViz start (they read it once, at start).
    order = launch_description_order(launch_tree)
    assert order.index("profile_environment") < min(
        order.index(name) for name in ("camera", "segmentation", "managed", "rviz"))


def launch_module_functions(source: str, *names: str) -> dict:
    """The launch file's plain functions, run without launch or launch_ros."""
    from ament_index_python.packages import get_package_share_directory

    tree = ast.parse(source)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    namespace = {"os": os, "get_package_share_directory": get_package_share_directory}
    exec(compile(ast.Module(body=functions, type_ignores=[]), "segmentation.launch.py", "exec"),
         namespace)
    return {name: namespace[name] for name in names}


def test_launch_includes_the_camera_launch_file_only_when_named(launch_tree, repo_root, tmp_path,
                                                                monkeypatch):
    include = next(n for n in ast.walk(launch_tree)
                   if isinstance(n, ast.FunctionDef) and n.name == "include_camera")
    assert launch_config_names(include) == {"camera_launch", "camera_package"}
    (included,) = calls(include, "IncludeLaunchDescription")
    assert calls(included, "AnyLaunchDescriptionSource")  # .py, .xml or .yaml launch files
    (opaque,) = calls(launch_tree, "OpaqueFunction")
    assert keyword(opaque, "function").id == "include_camera"
    for name in ("camera_launch", "camera_package"):
        assert ast.literal_eval(keyword(declared_arguments(launch_tree)[name],
                                        "default_value")) == ""

    # A camera package installed in an ament prefix, as colcon installs one.
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "my_camera").write_text("")
    (prefix / "share" / "my_camera" / "launch").mkdir(parents=True)
    (prefix / "share" / "my_camera" / "launch" / "camera.launch.py").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    source = (repo_root / "launch" / "segmentation.launch.py").read_text()
    camera_launch_file = launch_module_functions(source, "camera_launch_file")["camera_launch_file"]
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
    node_topics = {f"/{topic}" for topic in [*OUTPUT_TOPICS.values(), CLOUD_TOPIC]}
    assert {topic for topic, _ in topics.values()} <= node_topics
    assert (f"/{OUTPUT_TOPICS['overlay']}", True) in topics.values()
    cloud = [d for d in displays if d.get("Topic", {}).get("Value") == f"/{CLOUD_TOPIC}"]
    assert len(cloud) == 1 and cloud[0]["Enabled"]
    assert cloud[0]["Class"] == "rviz_default_plugins/PointCloud2"
    assert (cloud[0]["Color Transformer"], cloud[0]["Channel Name"]) == ("Intensity", "label")
    for display in displays:
        assert display["Class"].startswith("rviz_default_plugins/")
