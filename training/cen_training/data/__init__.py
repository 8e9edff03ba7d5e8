"""Datasets, augmentations and class lists for RGB-D semantic segmentation.

``RGBDSegmentationDataset(root, split, transform)`` reads NYUDv2 / SUN RGB-D (official
preprocessed layout) or a robot's own data (generic layout), detected from the folder;
``validate_dataset(root, splits)`` checks every file first. ``TrainTransform`` is the official
CEN augmentation; class lists for NYUDv2-40 and SUN RGB-D-37 ship as YAML files beside this
module (``load_class_list("nyudv2")``); a class map (``load_class_map``) merges or renames a
dataset's classes as its labels are read.
"""
from .classes import (
                      BUILTIN_CLASS_LISTS,
                      IGNORE_INDEX,
                      ClassList,
                      ClassMap,
                      builtin_classes,
                      load_class_list,
                      load_class_map,
)
from .datasets import (
                      LAYOUTS,
                      RGBDSegmentationDataset,
                      SampleFiles,
                      dataset_class_map,
                      detect_layout,
                      list_samples,
                      read_sample,
                      validate_dataset,
)
from .transforms import (
                      TrainTransform,
                      pad_to,
                      random_crop,
                      random_mirror,
                      random_scale,
                      resize,
                      val_transform,
)

__all__ = [
    "BUILTIN_CLASS_LISTS", "IGNORE_INDEX", "ClassList", "ClassMap", "builtin_classes",
    "load_class_list", "load_class_map",
    "LAYOUTS", "RGBDSegmentationDataset", "SampleFiles", "dataset_class_map", "detect_layout",
    "list_samples", "read_sample", "validate_dataset",
    "TrainTransform", "pad_to", "random_crop", "random_mirror", "random_scale", "resize",
    "val_transform",
]
