"""The node's executor (``cen_perception.executor.PooledExecutor``) with real rclpy and DDS."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import UInt32

from cen_perception.executor import PooledExecutor

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture
def node(ros_context):
    import rclpy

    node = rclpy.create_node(f"executor_{uuid.uuid4().hex[:8]}", context=ros_context,
                             namespace=f"/e{uuid.uuid4().hex[:8]}")
    yield node
    node.destroy_node()


@pytest.fixture
def executor(ros_context, node):
    executor = PooledExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    yield executor
    executor.shutdown(timeout_sec=5.0)


def spin_until(executor, predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def busy(seconds: float) -> None:
    """Python work that needs the GIL, like decoding and pairing in the node's callbacks."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


def test_each_ready_callback_goes_to_the_pool_once(node, executor):
    # Two streams in one mutually exclusive group whose callbacks hold the GIL for a while:
    # the camera callbacks' shape. rclpy's MultiThreadedExecutor submits a waiting callback
    # again on every loop (thousands of submissions for these 2 x 60 messages).
    group = MutuallyExclusiveCallbackGroup()
    received = {"a": 0, "b": 0}

    def callback(name):
        def on_message(_msg):
            busy(0.004)
            received[name] += 1
        return on_message

    publishers = {}
    for name in received:
        node.create_subscription(UInt32, name, callback(name), RELIABLE, callback_group=group)
        publishers[name] = node.create_publisher(UInt32, name, RELIABLE)
    assert spin_until(executor, lambda: all(p.get_subscription_count() for p in
                                            publishers.values()))
    before = executor.submitted
    for index in range(60):
        for publisher in publishers.values():
            publisher.publish(UInt32(data=index))
        executor.spin_once(timeout_sec=0.0)
    assert spin_until(executor, lambda: received == {"a": 60, "b": 60}), received
    submitted = executor.submitted - before
    # One submission per callback run, plus those rclpy hands out for the other stream while
    # the group is busy (they return at once): never many more.
    assert 120 <= submitted <= 3 * 120, submitted


def test_a_callback_that_waits_does_not_stop_other_groups(node, executor):
    # The reason for two threads: a parameter call waiting for an engine to open must not stop
    # the camera callbacks.
    release = threading.Event()
    waiting = threading.Event()

    def blocking(_msg):
        waiting.set()
        release.wait(20.0)

    counted = []
    slow = node.create_publisher(UInt32, "slow", RELIABLE)
    fast = node.create_publisher(UInt32, "fast", RELIABLE)
    node.create_subscription(UInt32, "slow", blocking, RELIABLE,
                             callback_group=MutuallyExclusiveCallbackGroup())
    node.create_subscription(UInt32, "fast", lambda m: counted.append(m.data), RELIABLE,
                             callback_group=MutuallyExclusiveCallbackGroup())
    assert spin_until(executor, lambda: slow.get_subscription_count()
                      and fast.get_subscription_count())
    slow.publish(UInt32(data=0))
    assert spin_until(executor, waiting.is_set)
    for index in range(20):
        fast.publish(UInt32(data=index))
    try:
        assert spin_until(executor, lambda: len(counted) == 20), counted
    finally:
        release.set()


def test_a_callbacks_exception_is_raised_from_spin_once(node, executor):
    def failing(_msg):
        raise ValueError("callback failed")

    publisher = node.create_publisher(UInt32, "fails", RELIABLE)
    node.create_subscription(UInt32, "fails", failing, RELIABLE)
    assert spin_until(executor, lambda: publisher.get_subscription_count())
    publisher.publish(UInt32(data=1))
    with pytest.raises(ValueError, match="callback failed"):
        spin_until(executor, lambda: False, timeout=10.0)


def test_shutdown_stops_the_pool(ros_context, node):
    executor = PooledExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    ran = []
    timer = node.create_timer(0.01, lambda: ran.append(1))
    assert spin_until(executor, lambda: len(ran) >= 3)
    assert executor.shutdown(timeout_sec=5.0)
    node.destroy_timer(timer)
    names = [t.name for t in threading.enumerate() if t.name.startswith("ros_callbacks")]
    assert names == []


def test_spin_until_future_complete_returns_once_it_is_done(ros_context, node, executor):
    from rclpy.task import Future

    future = Future()
    timer = node.create_timer(0.05, lambda: future.set_result("done"))
    executor.spin_until_future_complete(future, timeout_sec=10.0)
    node.destroy_timer(timer)
    assert future.result() == "done"
