"""Tools beside the node, not needed on a robot: the bag library (``bag``) and the
``cen-perception-bag`` batch job (``segment_bag``), the player (``player``), the node and
transport benchmarks (``bench``, ``transport_check``), the synthetic world (``scene``) and its
recorded sequence (``sequence``). They need the ``tools`` extra (rosbags, tqdm)."""
