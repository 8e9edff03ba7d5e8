"""The launch file, the params file and the RViz layout agree with the node (launch_ros is not
needed: the launch file is read as Python source)."""
import ast

import pytest
import yaml

from cen_perception.node import (INPUT_TOPICS, NODE_NAME, OUTPUT_TOPICS, PARAMETERS,
                                 READ_ONLY_PARAMETERS, check_parameter)


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


def segmentation_node(tree):
    nodes = [c for c in calls(tree, "Node")
             if ast.literal_eval(keyword(c, "executable")) == "cen_segmentation_node"]
    assert len(nodes) == 1
    return nodes[0]


def test_launch_arguments(launch_tree):
    declared = {c.args[0].value for c in calls(launch_tree, "DeclareLaunchArgument")}
    assert declared == {"engine", "rgb_topic", "depth_topic", "params_file", "rviz"}
    # Every LaunchConfiguration used is one of the declared arguments.
    assert launch_config_names(launch_tree) <= declared
    params_file = next(c for c in calls(launch_tree, "DeclareLaunchArgument")
                       if c.args[0].value == "params_file")
    default = keyword(params_file, "default_value")
    strings = {n.value for n in ast.walk(default) if isinstance(n, ast.Constant)}
    assert {"config", "segmentation.yaml"} <= strings


def test_launch_node_sets_only_declared_parameters(launch_tree):
    node = segmentation_node(launch_tree)
    assert ast.literal_eval(keyword(node, "package")) == "cen_perception"
    assert ast.literal_eval(keyword(node, "name")) == NODE_NAME
    parameters = keyword(node, "parameters")
    set_names = set()
    for element in parameters.elts:
        if isinstance(element, ast.Dict):
            set_names |= {ast.literal_eval(k) for k in element.keys}
    assert set_names == {"engine_path"}
    assert set_names <= set(PARAMETERS)
    assert launch_config_names(parameters) == {"params_file", "engine"}


def test_launch_remaps_the_node_inputs(launch_tree):
    remappings = keyword(segmentation_node(launch_tree), "remappings")
    remapped = {ast.literal_eval(pair.elts[0]): launch_config_names(pair.elts[1])
                for pair in remappings.elts}
    assert remapped == {INPUT_TOPICS["rgb"]: {"rgb_topic"}, INPUT_TOPICS["depth"]: {"depth_topic"}}


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


def test_rviz_layout_shows_the_node_overlay(repo_root):
    layout = yaml.safe_load((repo_root / "config" / "segmentation.rviz").read_text())
    displays = layout["Visualization Manager"]["Displays"]
    topics = {d["Name"]: (d["Topic"]["Value"], d["Enabled"]) for d in displays if "Topic" in d}
    assert topics, "no display subscribes to a topic"
    node_topics = {f"/{topic}" for topic in OUTPUT_TOPICS.values()}
    assert {topic for topic, _ in topics.values()} <= node_topics
    assert (f"/{OUTPUT_TOPICS['overlay']}", True) in topics.values()
    for display in displays:
        assert display["Class"].startswith("rviz_default_plugins/")
