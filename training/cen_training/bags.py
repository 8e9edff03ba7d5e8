"""Access to recorded ROS 2 bags for the training commands.

Bags are read through ``cen_perception.tools.bag`` (the runtime package), which needs the
``rosbags`` library: ``pip install 'cen_training[bag]'``. Imported only by the commands that
read bags, so the rest of the package works without it.
"""
from __future__ import annotations

from .errors import DatasetError


def bag_module():
    """``cen_perception.tools.bag``, or a ``DatasetError`` saying what to install."""
    try:
        from cen_perception.tools import bag
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "rosbags"
        raise DatasetError(f"reading bags needs the cen_perception package and rosbags "
                           f"({missing} is missing): pip install 'cen_training[bag]' and "
                           "cen_perception") from None
    return bag
