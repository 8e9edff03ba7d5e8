"""Benchmarks: the inference speed of one model's graphs and exports (``inference``, behind
``cen-train bench``), and the comparative tables that train several models side by side on
synthetic data (``comparative``, ``fusion``, ``translation``, behind ``bench-fusion`` and
``bench-translation``; runs in parallel processes by ``side_by_side``)."""
