"""Benchmarks: the inference speed of one model's graphs and exports (``inference``, behind
``cen-train bench``), and the runner of the comparative tables that train several models side
by side on synthetic data (``comparative``, with ``side_by_side`` running the training
processes; the tables' models and columns are in ``commands.bench_fusion`` and
``commands.bench_translation``)."""
