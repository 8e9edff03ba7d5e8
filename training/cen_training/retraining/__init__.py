"""Retraining for a new robot: frames from its bags (``bag_pairs``), the frames worth labelling
(``selection``), labels to and from CVAT (``cvat``) and an old and a new model side by side with
a gate for the new one (``comparison``). The loop is driven by the ``extract-frames``,
``select-frames``, ``export-labels``, ``import-labels``, ``train`` and ``compare`` commands."""
