"""Model-card contents that training knows: class names and colours of the built-in datasets."""
from __future__ import annotations

from typing import Any


def generic_palette(num_classes: int) -> list[list[int]]:
    """Distinct colours (the PASCAL VOC bit-interleaving scheme), one RGB triple per class."""
    palette = []
    for i in range(num_classes):
        r = g = b = 0
        c = i + 1  # skip black, which marks unlabeled pixels in pictures
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette


def default_card(num_classes: int, dataset: str | None = None) -> dict[str, Any]:
    """Card fields for ``num_classes``: the built-in class list of ``dataset`` when it has that
    many classes, otherwise generic names and colours."""
    names = palette = None
    if dataset:
        try:
            from .data import builtin_classes
            names, palette = builtin_classes(dataset)
        except (ImportError, KeyError):
            names = None
    if names is None or len(names) != num_classes:
        names = [f"class_{i}" for i in range(num_classes)]
        palette = generic_palette(num_classes)
    return {"class_names": list(names), "palette": [list(map(int, c)) for c in palette],
            "dataset": {"name": dataset or "unknown"}, "metrics": {}}
