"""The networks: multi-branch ResNet encoders, the RefineNet decoder, CEN / AsymFusion fusion.

``build_model(ModelConfig(...))`` is the factory; see ``fusion_net`` for the archs.
"""
from .fusion_net import (
                         ARCHS,
                         BACKBONES,
                         LAYER_NAMES,
                         MODALITIES,
                         FusionSegmenter,
                         LateFusionSegmenter,
                         ModelConfig,
                         build_model,
)
from .imagenet import init_from_imagenet, load_imagenet, read_imagenet_state_dict
from .refinenet import DECODERS, RefineNetDecoder

__all__ = ["ARCHS", "BACKBONES", "DECODERS", "LAYER_NAMES", "MODALITIES", "FusionSegmenter",
           "LateFusionSegmenter", "ModelConfig", "RefineNetDecoder", "build_model",
           "init_from_imagenet", "load_imagenet", "read_imagenet_state_dict"]
