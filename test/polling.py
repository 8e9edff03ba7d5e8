"""Waiting for something another thread does, in tests that run without ROS."""
import time


def wait_for(condition, timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it is true (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return False
