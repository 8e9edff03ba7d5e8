"""cen_perception: RGB-D semantic segmentation at run time (no torch).

Modules: ``engines`` (ONNX Runtime, TensorRT), ``image_codec`` (sensor_msgs/Image <-> numpy),
``sync`` (RGB-depth pairing), ``visualize`` (palette, overlay), ``model_card``, ``bag``
(recorded sequences), ``node`` (the ROS 2 node, a thin shell over the rest).
"""
__version__ = "0.1.0"
