"""Segmentation scores from a confusion matrix, as the official CEN evaluation computes them.

Rows of the confusion matrix are ground-truth classes, columns predicted classes. Pixels whose
label is not a class id (255 = ignore) are left out. Scores are percentages:

* ``pixel_acc``: correctly labelled pixels / all counted pixels;
* ``mean_acc``: mean over classes present in the ground truth of their pixel accuracy;
* ``miou``: mean over classes present in the ground truth or the prediction of
  ``TP / (TP + FP + FN)``; ``per_class_iou`` gives each (``None`` where a class is absent
  from both, which the mean skips).
"""
from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(labels, prediction, num_classes: int) -> np.ndarray:
    """``[C, C]`` int64 counts of (label, predicted) pairs; labels >= C (e.g. 255) ignored."""
    labels = torch.as_tensor(labels).reshape(-1).long()
    prediction = torch.as_tensor(prediction).reshape(-1).long()
    keep = (labels >= 0) & (labels < num_classes)
    index = labels[keep] * num_classes + prediction[keep].clamp(0, num_classes - 1)
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def scores(matrix: np.ndarray, class_names: list[str] | None = None) -> dict:
    """``{"pixel_acc", "mean_acc", "miou", "per_class_iou"}`` (percent) from a confusion matrix.

    ``per_class_iou`` maps class name (or id as a string) to IoU, ``None`` for classes absent
    from both ground truth and prediction.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    num_classes = matrix.shape[0]
    names = class_names or [str(i) for i in range(num_classes)]
    true_positive = np.diag(matrix)
    gt_pixels = matrix.sum(axis=1)
    predicted_pixels = matrix.sum(axis=0)
    union = gt_pixels + predicted_pixels - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        class_acc = np.where(gt_pixels > 0, true_positive / gt_pixels, np.nan)
        iou = np.where(union > 0, true_positive / union, np.nan)
    total = matrix.sum()

    def mean(values: np.ndarray) -> float:
        values = values[~np.isnan(values)]
        return float(values.mean() * 100) if values.size else 0.0

    return {
        "pixel_acc": float(true_positive.sum() / total * 100) if total else 0.0,
        "mean_acc": mean(class_acc),
        "miou": mean(iou),
        "per_class_iou": {name: (None if np.isnan(v) else float(v * 100))
                          for name, v in zip(names, iou)},
    }


class ConfusionMeter:
    """Accumulates one confusion matrix per output (each branch and the ensemble)."""

    def __init__(self, output_names: list[str], num_classes: int):
        self.output_names = list(output_names)
        self.num_classes = num_classes
        self.matrices = {name: np.zeros((num_classes, num_classes), np.int64)
                         for name in self.output_names}

    def update(self, name: str, labels, prediction) -> None:
        self.matrices[name] += confusion_matrix(labels, prediction, self.num_classes)

    def all_reduce(self) -> None:
        """Sum the matrices over the processes of a distributed run."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return
        stacked = torch.from_numpy(np.stack([self.matrices[n] for n in self.output_names]))
        if dist.get_backend() == "nccl":
            stacked = stacked.cuda()
        dist.all_reduce(stacked)
        for name, matrix in zip(self.output_names, stacked.cpu().numpy()):
            self.matrices[name] = matrix

    def scores(self, class_names: list[str] | None = None) -> dict:
        return {name: scores(self.matrices[name], class_names) for name in self.output_names}
