"""Tools beside the node, not needed on a robot: the bag library (``bag``, with the pairing
options every bag command shares in ``pairing``) and the ``cen-perception-bag`` batch job
(``segment_bag``), the player (``player``), the rig that starts the node and talks to it over
DDS (``rig``: the benchmark, the demo, ``cen-train gpu-check`` and the tests), the node and
transport benchmarks (``bench``, ``transport_check``), the synthetic world (``scene``) and its
recorded sequence (``sequence``). They need the ``tools`` extra (rosbags, tqdm)."""
