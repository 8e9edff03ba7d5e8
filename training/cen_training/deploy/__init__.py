"""From a trained model to what the robot runs.

``fused`` folds a trained network into its inference graph, ``export`` writes the engine
contract's ONNX file (with its parity check), ``quantize`` makes its fp16 and INT8 versions,
``onnx_ops`` checks a graph against the contract and TensorRT's parser, ``tensorrt`` builds
and caches TensorRT engines.
"""
