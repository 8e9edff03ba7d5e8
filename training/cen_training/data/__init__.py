"""Datasets, augmentations and class lists for RGB-D semantic segmentation.

``RGBDSegmentationDataset(root, split, transform)`` reads NYUDv2 / SUN RGB-D (official
preprocessed layout) or a robot's own data (generic layout), detected from the folder;
``validate_dataset(root, splits)`` checks every file first. ``TrainTransform`` is the official
CEN augmentation; class lists for NYUDv2-40 and SUN RGB-D-37 ship as YAML files beside this
module (``load_class_list("nyudv2")``).
"""
from .classes import (BUILTIN_CLASS_LISTS, IGNORE_INDEX, ClassList, builtin_classes,
                      load_class_list)
from .datasets import (LAYOUTS, RGBDSegmentationDataset, SampleFiles, detect_layout,
                       list_samples, read_sample, validate_dataset)
from .transforms import (TrainTransform, pad_to, random_crop, random_mirror, random_scale, resize,
                         val_transform)

__all__ = [
    "BUILTIN_CLASS_LISTS", "IGNORE_INDEX", "ClassList", "builtin_classes", "load_class_list",
    "LAYOUTS", "RGBDSegmentationDataset", "SampleFiles", "detect_layout", "list_samples",
    "read_sample", "validate_dataset",
    "TrainTransform", "pad_to", "random_crop", "random_mirror", "random_scale", "resize",
    "val_transform",
]
