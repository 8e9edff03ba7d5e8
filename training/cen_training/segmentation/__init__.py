"""Segmentation training: the CEN recipe's loop (``train``), evaluation of a model on a split
(``evaluate``) and the scores both report (``metrics``: confusion matrix, mIoU, accuracies)."""
