"""Affinity training, by step: data (``data``), chronological evaluation on a holdout
(``evaluate``, with the ranking metrics in ``metrics``), hyper-parameter search (``search``), the
full offline report (``report``, figures in ``plots``) and the shipped model's training,
registration and gate (``train``)."""
