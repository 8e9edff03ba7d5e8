"""Class lists: names and display colours, one per label id.

A class list is a YAML file::

    name: my_robot            # optional: the dataset's name
    classes:
      - {name: floor, color: [0, 128, 0]}
      - {name: obstacle, color: [255, 0, 0]}

Entry ``i`` describes label id ``i``; id 255 is always "unlabelled" and is not listed. The
lists for NYUDv2 (40 classes) and SUN RGB-D (37 classes) ship with this package.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import yaml

from ..errors import DatasetError

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
BUILTIN_CLASS_LISTS = {"nyudv2": "nyudv2_40.yaml", "sunrgbd": "sunrgbd_37.yaml"}
IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassList:
    names: list[str]
    palette: list[list[int]]  # RGB triples in 0..255
    dataset_name: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_yaml(self) -> str:
        lines = []
        if self.dataset_name:
            lines.append(f"name: {self.dataset_name}")
        lines.append("classes:")
        for name, (r, g, b) in zip(self.names, self.palette):
            # A JSON string is a valid YAML flow scalar, quoted as needed.
            lines.append(f"  - {{name: {json.dumps(name)}, color: [{r}, {g}, {b}]}}")
        return "\n".join(lines) + "\n"

    def save(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(self.to_yaml(), encoding="utf-8")


def parse_class_list(data, source: str) -> ClassList:
    """Check and convert the parsed YAML of a class list."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise DatasetError(f"{source}: expected a mapping with a 'classes' list")
    names, palette = [], []
    for index, entry in enumerate(data["classes"]):
        if not isinstance(entry, dict) or "name" not in entry or "color" not in entry:
            raise DatasetError(f"{source}: class {index} needs 'name' and 'color'")
        color = entry["color"]
        if (not isinstance(color, (list, tuple)) or len(color) != 3
                or any(not isinstance(v, int) or not 0 <= v <= 255 for v in color)):
            raise DatasetError(f"{source}: class {index} ({entry['name']}): color must be "
                               f"[R, G, B] integers in 0..255, got {color!r}")
        names.append(str(entry["name"]))
        palette.append([int(v) for v in color])
    if not 1 <= len(names) <= 255:
        raise DatasetError(f"{source}: {len(names)} classes; need 1..255 (255 is the ignore id)")
    if len(set(names)) != len(names):
        raise DatasetError(f"{source}: class names must be unique")
    return ClassList(names=names, palette=palette, dataset_name=str(data.get("name", "")))


def load_class_list(name_or_path: str | pathlib.Path) -> ClassList:
    """A built-in list by dataset name (``nyudv2``, ``sunrgbd``) or a YAML file by path."""
    key = str(name_or_path)
    path = (PACKAGE_DIR / BUILTIN_CLASS_LISTS[key] if key in BUILTIN_CLASS_LISTS
            else pathlib.Path(name_or_path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: class list not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_class_list(data, str(path))


def builtin_classes(dataset: str) -> tuple[list[str], list[list[int]]]:
    """``(names, palette)`` of a built-in dataset (``nyudv2``, ``sunrgbd``); ``KeyError`` else."""
    if dataset not in BUILTIN_CLASS_LISTS:
        raise KeyError(dataset)
    classes = load_class_list(dataset)
    return classes.names, classes.palette
