"""Scores from confusion matrices, checked against hand-computed values."""
import numpy as np
import pytest
import torch

from cen_training.segmentation.metrics import ConfusionMeter, confusion_matrix, scores


def test_confusion_matrix_counts_label_prediction_pairs_and_skips_ignored_pixels():
    labels = np.array([[0, 0, 1, 2], [2, 255, 1, 1]])
    prediction = np.array([[0, 1, 1, 2], [0, 2, 1, 0]])
    expected = np.array([[1, 1, 0],   # label 0: once right, once taken for 1
                         [1, 2, 0],   # label 1: twice right, once taken for 0
                         [1, 0, 1]])  # label 2: once right, once taken for 0; the 255 is skipped
    np.testing.assert_array_equal(confusion_matrix(labels, prediction, 3), expected)
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(labels), torch.from_numpy(prediction), 3), expected)


def test_scores_by_hand():
    matrix = np.array([[1, 1, 0],
                       [1, 2, 0],
                       [1, 0, 1]])
    s = scores(matrix, ["a", "b", "c"])
    assert s["pixel_acc"] == pytest.approx(100 * 4 / 7)
    assert s["mean_acc"] == pytest.approx(100 * (1 / 2 + 2 / 3 + 1 / 2) / 3)
    # IoU = TP / (row + column - TP): a 1/(2+3-1), b 2/(3+3-2), c 1/(2+1-1)
    assert s["per_class_iou"] == pytest.approx({"a": 25.0, "b": 50.0, "c": 50.0})
    assert s["miou"] == pytest.approx(125 / 3)


def test_absent_classes():
    # Class 2 never appears: skipped by every mean. Class 1 is predicted but absent from the
    # labels: IoU 0 counts in mIoU, but it has no accuracy of its own.
    matrix = np.array([[3, 1, 0],
                       [0, 0, 0],
                       [0, 0, 0]])
    s = scores(matrix)
    assert s["per_class_iou"] == {"0": pytest.approx(75.0), "1": 0.0, "2": None}
    assert s["miou"] == pytest.approx(37.5)
    assert s["mean_acc"] == pytest.approx(75.0)
    assert s["pixel_acc"] == pytest.approx(75.0)
    assert scores(np.zeros((2, 2)))["miou"] == 0.0


def test_meter_accumulates_per_output():
    meter = ConfusionMeter(["rgb", "ensemble"], 2)
    labels = torch.tensor([[0, 1], [1, 1]])
    meter.update("rgb", labels, torch.tensor([[0, 0], [1, 1]]))
    meter.update("ensemble", labels, labels)
    meter.update("ensemble", labels, labels)
    result = meter.scores(["x", "y"])
    assert result["ensemble"]["miou"] == 100.0 and meter.matrices["ensemble"].sum() == 8
    assert result["rgb"]["per_class_iou"] == pytest.approx({"x": 50.0, "y": 200 / 3})
