"""Recorded bags: the library (``recorded``: read, pair, write; ``pairing``: the options every
bag command shares) and the user commands ``cen-perception-bag`` (``segment``: a bag's pairs
segmented into a new bag) and ``cen-perception-play`` (``player``: a bag played into the node).
They need the ``bag`` extra (rosbags, tqdm)."""
