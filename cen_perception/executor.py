"""The node's executor: callbacks on a small pool of threads, without a busy loop.

The node needs two threads: a parameter call that opens a new engine waits for it while the
camera callbacks go on. rclpy's ``MultiThreadedExecutor`` would do, but for a flaw of the
releases robots run today (Humble, Jazzy; ros2/rclpy#1452, fixed in newer rclpy by #1547):
``Executor.wait_for_ready_callbacks`` hands out a callback again and again until a pool thread
has started it, and that executor submits every copy. While one callback waits for a thread,
its spin loop never sleeps: it keeps the GIL, the pool threads that should run the callbacks
get little of it, and the node falls behind its camera. Counted inside the node while
``cen-perception-bench`` sent 320x240 JPEG + PNG pairs at 20 Hz, on two cores: about 4,000
loops a second, nearly each one a submission, stalls of 0.1-0.2 s, labels up to 1.7 s late
and reliable frames lost when the camera's history ran over.

``PooledExecutor`` follows rclpy's documented way for a custom executor (``spin_once`` built on
``wait_for_ready_callbacks``): a callback already in the pool is not submitted again; the loop
waits instead until a pool thread finishes one (or for at most ``POOL_WAIT_S``).
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Optional

from rclpy.executors import (ConditionReachedException, Executor, ExternalShutdownException,
                             ShutdownException, TimeoutException)

# How long the loop waits for a pool thread before it looks for new work again (s): short,
# so that a callback that becomes ready while both threads are busy is queued promptly.
POOL_WAIT_S = 0.005


class PooledExecutor(Executor):
    """Runs callbacks on ``num_threads`` threads; each ready callback is submitted once.

    Callback groups behave as with rclpy's executors. An exception raised by a callback is
    raised again from ``spin_once`` (and so ends ``spin``), as rclpy's ``MultiThreadedExecutor``
    does. ``submitted`` counts submissions (for tests).
    """

    def __init__(self, num_threads: int = 2, *, context=None) -> None:
        super().__init__(context=context)
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="ros_callbacks")
        self._in_pool: dict = {}  # rclpy Task -> its pool Future, until the pool is done with it
        self.submitted = 0

    def _spin_once_impl(self, timeout_sec: Optional[float] = None,
                        condition: Callable[[], bool] = lambda: False) -> None:
        try:
            task, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, condition)
        except (ShutdownException, ExternalShutdownException, TimeoutException,
                ConditionReachedException):
            return
        if task in self._in_pool:
            # Handed out again while it waits for a thread: wait for the pool, not the GIL.
            wait(list(self._in_pool.values()), POOL_WAIT_S, FIRST_COMPLETED)
        else:
            self._in_pool[task] = self._pool.submit(task)
            self.submitted += 1
        self._collect()

    def _collect(self) -> None:
        """Forget what the pool finished; raise a callback's exception here."""
        finished: list[tuple[object, Future]] = [(task, future) for task, future
                                                 in self._in_pool.items() if future.done()]
        for task, future in finished:
            del self._in_pool[task]
            future.result()
            if task.done():
                task.result()

    def spin_once(self, timeout_sec: Optional[float] = None) -> None:
        self._spin_once_impl(timeout_sec)

    def spin_once_until_future_complete(self, future, timeout_sec: Optional[float] = None) -> None:
        future.add_done_callback(lambda _: self.wake())
        self._spin_once_impl(timeout_sec, future.done)

    def shutdown(self, timeout_sec: Optional[float] = None) -> bool:
        finished = super().shutdown(timeout_sec)
        self._pool.shutdown(wait=finished)
        return finished
