"""Label masks in CVAT's "Segmentation mask 1.1" format, to annotate in CVAT and read back.

The format is the Pascal VOC segmentation layout (CVAT exports and imports it as a zip)::

    ROOT/labelmap.txt                         "# label:color_rgb:parts:actions", then one
                                              line per label: name:R,G,B::
    ROOT/ImageSets/Segmentation/default.txt   image names without extension, one per line
    ROOT/SegmentationClass/<name>.png         colour mask: each pixel its label's colour
    ROOT/SegmentationObject/<name>.png        instance mask (VOC colour map, 0 = none)

Writing (pre-labels to correct in CVAT): ``background:0,0,0::`` first, as CVAT's own export
does, for unlabelled pixels (255), then each class with its palette colour; one instance per
class present in a frame. Class colours must differ from each other and from black, and names
may not hold ``:`` (the field separator); ``DatasetError`` otherwise.

Reading (what CVAT exported): each label of ``labelmap.txt`` is matched to a class by name;
``background`` (when no class has that name) and black pixels where no label is black mean
unlabelled (255). A label that is not a class, two labels with one colour, or a mask colour
no label has raise ``DatasetError`` naming the file. A zip is read as it is, without
unpacking it anywhere.
"""
from __future__ import annotations

import pathlib
import zipfile
from typing import Iterable

import cv2
import numpy as np

from ..data.classes import IGNORE_INDEX, ClassList
from ..errors import DatasetError

FORMAT_NAME = "Segmentation mask 1.1"
LABELMAP = "labelmap.txt"
CLASS_DIR = "SegmentationClass"
OBJECT_DIR = "SegmentationObject"
IMAGE_LIST = "ImageSets/Segmentation/default.txt"
BACKGROUND = "background"
BLACK = (0, 0, 0)


def voc_colormap(count: int = 256) -> np.ndarray:
    """``[count, 3]`` uint8: the Pascal VOC colour map (bits of the index spread over R, G, B
    from the most significant bit down), which VOC instance masks use."""
    index = np.arange(count)
    colors = np.zeros((count, 3), np.int64)
    for shift in range(7, -1, -1):
        for channel in range(3):
            colors[:, channel] |= ((index >> channel) & 1) << shift
        index = index >> 3
    return colors.astype(np.uint8)


# -- writing ---------------------------------------------------------------------------------

def check_writable(classes: ClassList) -> None:
    """``DatasetError`` unless ``classes`` can be written as a labelmap and told apart in
    colour masks."""
    for name in classes.names:
        if ":" in name or "\n" in name:
            raise DatasetError(f"class name {name!r}: CVAT's labelmap.txt cannot hold ':' or "
                               "line breaks in a name")
    seen: dict[tuple[int, ...], str] = {}
    for name, color in zip(classes.names, classes.palette):
        color = tuple(int(v) for v in color)
        if color == BLACK:
            raise DatasetError(f"class '{name}' is black, the colour of unlabelled pixels in "
                               "CVAT masks; give it another colour in the class list")
        if color in seen:
            raise DatasetError(f"classes '{seen[color]}' and '{name}' share the colour "
                               f"{list(color)}; colour masks need one colour per class")
        seen[color] = name


def labelmap_text(classes: ClassList) -> str:
    """``labelmap.txt`` for ``classes``: background first (unless a class has that name)."""
    lines = ["# label:color_rgb:parts:actions"]
    if BACKGROUND not in classes.names:
        lines.append(f"{BACKGROUND}:0,0,0::")
    lines += [f"{name}:{r},{g},{b}::" for name, (r, g, b) in zip(classes.names, classes.palette)]
    return "\n".join(lines) + "\n"


def class_mask(labels: np.ndarray, classes: ClassList) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]``: each pixel its class colour, unlabelled (255) black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:classes.num_classes] = np.asarray(classes.palette, np.uint8)
    return lut[labels]


def object_mask(labels: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` instance mask: the classes present numbered 1, 2, ... in class
    order, coloured with the VOC colour map (0, unlabelled, black)."""
    present = [int(c) for c in np.unique(labels) if c != IGNORE_INDEX]
    instance = np.zeros(256, np.int64)
    instance[present] = np.arange(1, len(present) + 1)
    return voc_colormap(256)[instance[labels]]


def write_cvat_masks(root: str | pathlib.Path, items: Iterable[tuple[str, np.ndarray]],
                     classes: ClassList) -> list[str]:
    """Write ``(name, class-id labels)`` pairs as a CVAT "Segmentation mask 1.1" folder;
    returns the names written. ``root`` must not hold a labelmap yet."""
    check_writable(classes)
    root = pathlib.Path(root)
    if (root / LABELMAP).exists():
        raise DatasetError(f"{root}: already holds a {LABELMAP}; write into a new folder")
    for sub in (CLASS_DIR, OBJECT_DIR, pathlib.Path(IMAGE_LIST).parent):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for name, labels in items:
        labels = np.asarray(labels, np.uint8)
        bad = sorted(int(v) for v in np.unique(labels)
                     if v != IGNORE_INDEX and v >= classes.num_classes)
        if bad:
            raise DatasetError(f"{name}: class ids {bad} outside the class list "
                               f"(0..{classes.num_classes - 1})")
        for sub, mask in ((CLASS_DIR, class_mask(labels, classes)),
                          (OBJECT_DIR, object_mask(labels))):
            path = root / sub / f"{name}.png"
            if not cv2.imwrite(str(path), cv2.cvtColor(mask, cv2.COLOR_RGB2BGR)):
                raise DatasetError(f"{path}: could not write the mask")
        names.append(name)
    (root / IMAGE_LIST).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    (root / LABELMAP).write_text(labelmap_text(classes), encoding="utf-8")
    return names


def zip_folder(root: str | pathlib.Path, zip_path: str | pathlib.Path) -> pathlib.Path:
    """``root``'s files in a zip, paths relative to ``root`` (what CVAT uploads)."""
    root, zip_path = pathlib.Path(root), pathlib.Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(root).as_posix())
    return zip_path


# -- reading ---------------------------------------------------------------------------------

class CvatExport:
    """A CVAT "Segmentation mask 1.1" export: a folder or the zip CVAT downloads.

    ``labelmap`` is ``{label: (R, G, B) or None}``, ``masks`` ``{image name: member}`` (the
    file stem; names must be unique), and ``read_rgb(member)`` decodes a mask to RGB.
    """

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                raise DatasetError(f"{self.path}: not a zip file") from None
            members = [m for m in self._zip.namelist() if not m.endswith("/")]
        elif self.path.is_dir():
            members = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
                       if p.is_file()]
        else:
            raise DatasetError(f"{self.path}: not found")
        prefix = _export_prefix(members)
        if prefix is None:
            raise DatasetError(f"{self.path}: not a CVAT '{FORMAT_NAME}' export (no "
                               f"{LABELMAP} beside {CLASS_DIR}/)")
        self.labelmap = parse_labelmap(self._read_text(prefix + LABELMAP),
                                       f"{self.path}: {prefix + LABELMAP}")
        self.masks: dict[str, str] = {}
        for member in sorted(members):
            if member.startswith(prefix + CLASS_DIR + "/") and member.lower().endswith(".png"):
                name = pathlib.PurePosixPath(member).stem
                if name in self.masks:
                    raise DatasetError(f"{self.path}: two masks named {name}.png "
                                       f"({self.masks[name]}, {member})")
                self.masks[name] = member

    def _read_bytes(self, member: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(member)
        return (self.path / member).read_bytes()

    def _read_text(self, member: str) -> str:
        return self._read_bytes(member).decode("utf-8")

    def read_rgb(self, member: str) -> np.ndarray:
        """A mask as uint8 RGB ``[H, W, 3]`` (grey or indexed-colour masks expanded)."""
        data = np.frombuffer(self._read_bytes(member), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{self.path}: {member}: cannot read the mask")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def color_lookup(self, classes: ClassList) -> dict[tuple[int, int, int], int]:
        """``{colour: class id or 255}`` from the labelmap, matched to ``classes`` by name."""
        source = f"{self.path}: {LABELMAP}"
        ids = {name: i for i, name in enumerate(classes.names)}
        lookup: dict[tuple[int, int, int], int] = {}
        owner: dict[tuple[int, int, int], str] = {}
        for label, color in self.labelmap.items():
            if label in ids:
                class_id = ids[label]
            elif label == BACKGROUND:
                class_id = IGNORE_INDEX
            else:
                raise DatasetError(f"{source}: label '{label}' is not a class of the class "
                                   f"list ({', '.join(classes.names[:8])}"
                                   f"{' ...' if classes.num_classes > 8 else ''}); rename it "
                                   "in CVAT or add the class")
            if color is None:
                if class_id == IGNORE_INDEX:
                    continue
                raise DatasetError(f"{source}: label '{label}' has no colour")
            if color in owner:
                raise DatasetError(f"{source}: labels '{owner[color]}' and '{label}' share the "
                                   f"colour {list(color)}")
            owner[color] = label
            lookup[color] = class_id
        lookup.setdefault(BLACK, IGNORE_INDEX)  # CVAT paints unannotated pixels black
        return lookup

    def read_labels(self, member: str, lookup: dict[tuple[int, int, int], int]) -> np.ndarray:
        """The class ids of one mask."""
        return colors_to_ids(self.read_rgb(member), lookup, f"{self.path}: {member}")

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> "CvatExport":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def is_cvat_export(path: str | pathlib.Path) -> bool:
    """Whether ``path`` looks like a CVAT "Segmentation mask 1.1" export (folder or zip)."""
    path = pathlib.Path(path)
    if path.is_dir():
        members = [p.relative_to(path).as_posix() for p in path.glob("*")]
        members += [p.relative_to(path).as_posix() for p in path.glob("*/*")]
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    else:
        return False
    return _export_prefix(members) is not None


def _export_prefix(members: list[str]) -> str | None:
    """The folder inside a listing that holds ``labelmap.txt`` and ``SegmentationClass/``
    ('' at the top; CVAT zips have them at the top, an unpacked copy may add one folder)."""
    for member in sorted(members, key=len):
        if member == LABELMAP or member.endswith("/" + LABELMAP):
            prefix = member[:-len(LABELMAP)]
            if any(m.startswith(prefix + CLASS_DIR + "/") or m == prefix + CLASS_DIR
                   for m in members):
                return prefix
    return None


def parse_labelmap(text: str, source: str) -> dict[str, tuple[int, int, int] | None]:
    """``{label: colour or None}`` in file order from a ``labelmap.txt``."""
    labels: dict[str, tuple[int, int, int] | None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        color_text = rest.split(":")[0].strip()
        if name in labels:
            raise DatasetError(f"{source}:{number}: label '{name}' defined twice")
        color = None
        if color_text:
            try:
                values = tuple(int(v) for v in color_text.split(","))
            except ValueError:
                values = ()
            if len(values) != 3 or any(not 0 <= v <= 255 for v in values):
                raise DatasetError(f"{source}:{number}: label '{name}': colour must be R,G,B "
                                   f"in 0..255, got '{color_text}'")
            color = values
        labels[name] = color
    if not labels:
        raise DatasetError(f"{source}: no labels")
    return labels


def colors_to_ids(image_rgb: np.ndarray, lookup: dict[tuple[int, int, int], int],
                  source: str, hint: str = "") -> np.ndarray:
    """Class ids (uint8) for a colour-coded label image; a colour missing from ``lookup``
    raises ``DatasetError`` naming where it first appears (then ``hint``, if any)."""
    keys = ((image_rgb[..., 0].astype(np.int32) << 16) | (image_rgb[..., 1].astype(np.int32) << 8)
            | image_rgb[..., 2].astype(np.int32))
    table = {(r << 16) | (g << 8) | b: class_id for (r, g, b), class_id in lookup.items()}
    colors, inverse = np.unique(keys, return_inverse=True)
    unknown = [int(c) for c in colors if int(c) not in table]
    if unknown:
        first = unknown[0]
        row, column = np.argwhere(keys == first)[0]
        rgb = [(first >> 16) & 255, (first >> 8) & 255, first & 255]
        raise DatasetError(f"{source}: colour {rgb} (first at row {row}, column {column}) is "
                           "not a class colour"
                           + (f"; {len(unknown) - 1} more unknown colours" if len(unknown) > 1
                              else "") + (f" ({hint})" if hint else ""))
    ids = np.array([table[int(c)] for c in colors], dtype=np.uint8)
    return ids[inverse.reshape(keys.shape)]


__all__ = ["FORMAT_NAME", "CvatExport", "check_writable", "class_mask", "colors_to_ids",
           "is_cvat_export", "labelmap_text", "object_mask", "parse_labelmap", "voc_colormap",
           "write_cvat_masks", "zip_folder"]
