"""Uplift training, by step: training sets from past campaigns (``data``; public benchmark data
sets in ``datasets``), fitting and level calibration (``fit``, ``calibration``), scores on the
held-out split (``evaluate``, with the Qini, AUUC and uplift@k in ``metrics``), the truth check
on simulated programs (``simulated``), the benchmark against CausalML and scikit-uplift
(``benchmark``) and the shipped model's training, registration and gate (``train``)."""
