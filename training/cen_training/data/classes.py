"""Class lists: names and display colours, one per label id.

A class list is a YAML file::

    name: my_robot            # optional: the dataset's name
    classes:
      - {name: floor, color: [0, 128, 0]}
      - {name: obstacle, color: [255, 0, 0]}

Entry ``i`` describes label id ``i``; id 255 is always "unlabelled" and is not listed. The
lists for NYUDv2 (40 classes) and SUN RGB-D (37 classes) ship with this package.

A class map merges or renames the classes of a dataset's labels into another class list when
the labels are read (the files stay as they are), e.g. NYUDv2's 40 classes into a robot's 8::

    map:                      # source class (the dataset's) -> target class (the class list's)
      floor: floor
      wall: wall
      cabinet: furniture      # several source classes into one target class: merged
      bed: furniture
      otherprop: clutter      # a renamed class
    ignore: [ceiling, person] # explicitly unlabelled (255)
    other: other              # optional: the target class of every source class not named
                              # above; without it those become 255 (unlabelled) too

Names on both sides must exist in their class lists; label 255 stays 255.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field

import numpy as np
import yaml

from ..errors import DatasetError, one_line

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
        raise DatasetError(f"{path}: not valid YAML ({one_line(exc)})") from None
    return parse_class_list(data, str(path))


def builtin_classes(dataset: str) -> tuple[list[str], list[list[int]]]:
    """``(names, palette)`` of a built-in dataset (``nyudv2``, ``sunrgbd``); ``KeyError`` else."""
    if dataset not in BUILTIN_CLASS_LISTS:
        raise KeyError(dataset)
    classes = load_class_list(dataset)
    return classes.names, classes.palette


# -- class maps ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassMap:
    """Source class ids -> target class ids, as a lookup table over every uint8 label."""
    source: ClassList
    target: ClassList
    lut: np.ndarray = field(repr=False)  # uint8 [256]: target id (255 = ignore) per source id
    ignored: tuple[str, ...] = ()  # source classes the map names as ignored
    unmapped: tuple[str, ...] = ()  # source classes the map does not name (-> other or 255)
    other: str | None = None  # the target class of unmapped source classes, if any
    path: str = ""

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Source class ids (uint8) as target class ids; 255 stays 255."""
        return self.lut[labels]

    def check_complete(self) -> None:
        """``DatasetError`` unless every source class is mapped, ignored or caught by
        ``other``."""
        if self.unmapped and self.other is None:
            shown = ", ".join(self.unmapped[:8]) + (
                f" and {len(self.unmapped) - 8} more" if len(self.unmapped) > 8 else "")
            raise DatasetError(f"{self.path}: {len(self.unmapped)} source class(es) neither "
                               f"mapped nor ignored: {shown} (map them, list them under "
                               "'ignore', or name an 'other' class)")

    def describe(self) -> str:
        """One line: what the map does."""
        merged = sum(1 for t in range(self.target.num_classes)
                     if int((self.lut[:self.source.num_classes] == t).sum()) > 1)
        text = (f"class map {self.path}: {self.source.num_classes} source classes -> "
                f"{self.target.num_classes} target classes ({merged} merged)")
        if self.ignored:
            text += f", {len(self.ignored)} ignored"
        if self.unmapped:
            text += (f", {len(self.unmapped)} unmapped -> "
                     + (f"'{self.other}'" if self.other else "255 (ignored)"))
        return text


def parse_class_map(data, source: ClassList, target: ClassList, origin: str) -> ClassMap:
    """Check and convert the parsed YAML of a class map (see the module docstring)."""
    if not isinstance(data, dict) or not isinstance(data.get("map", {}), dict):
        raise DatasetError(f"{origin}: expected a mapping with a 'map' of source class -> "
                           "target class")
    unknown_keys = sorted(set(data) - {"map", "ignore", "other"})
    if unknown_keys:
        raise DatasetError(f"{origin}: unknown entries {unknown_keys}; a class map has 'map', "
                           "'ignore' and 'other'")
    mapping = {str(k): v for k, v in (data.get("map") or {}).items()}
    ignore = data.get("ignore") or []
    if not isinstance(ignore, list):
        raise DatasetError(f"{origin}: 'ignore' must be a list of source class names")
    ignore = [str(name) for name in ignore]
    other = data.get("other")
    source_ids = {name: i for i, name in enumerate(source.names)}
    target_ids = {name: i for i, name in enumerate(target.names)}

    def check_source(name: str) -> int:
        if name not in source_ids:
            raise DatasetError(f"{origin}: '{name}' is not a source class (the dataset's "
                               f"classes are {_names(source.names)})")
        return source_ids[name]

    def check_target(name, where: str) -> int:
        if not isinstance(name, str) or name not in target_ids:
            raise DatasetError(f"{origin}: {where}: '{name}' is not a target class (the class "
                               f"list has {_names(target.names)})")
        return target_ids[name]

    lut = np.full(256, IGNORE_INDEX, np.uint8)
    named = set()
    for name, target_name in mapping.items():
        lut[check_source(name)] = check_target(target_name, f"map of '{name}'")
        named.add(name)
    for name in ignore:
        check_source(name)
        if name in named:
            raise DatasetError(f"{origin}: '{name}' is both mapped and ignored")
        named.add(name)
    if other is not None:
        other_id = check_target(other, "other")
    unmapped = tuple(n for n in source.names if n not in named)
    if other is not None:
        for name in unmapped:
            lut[source_ids[name]] = other_id
    return ClassMap(source=source, target=target, lut=lut, ignored=tuple(ignore),
                    unmapped=unmapped, other=other, path=origin)


def load_class_map(path: str | pathlib.Path, source: ClassList, target: ClassList) -> ClassMap:
    """A class map file (YAML) from ``source``'s classes into ``target``'s."""
    path = pathlib.Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: class map not found") from None
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML ({one_line(exc)})") from None
    return parse_class_map(data, source, target, str(path))


def _names(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit
                                       else "")
