"""Policy value on randomised real data (Hillstrom, Starbucks, Open Bandit).

* :mod:`training.policy.randomized`: IPS, SNIPS, DR and paired IPS contrasts with 95%
  intervals (pure functions that check their inputs; :class:`PolicyInputError`);
* :mod:`training.policy.policies`: the engine's send rule and the simple policies as
  probability matrices;
* :mod:`training.policy.arms`: a multi-arm randomised test over seeded splits (ours, peers,
  fixed arms, random, nobody); :mod:`training.policy.hillstrom`, :mod:`training.policy.starbucks`
  load the two tests; :mod:`training.policy.open_bandit` values Bernoulli Thompson sampling
  from the uniform-random logs;
* :mod:`training.policy.run`: ``offers evaluate policy --dataset ...`` (options and output).
"""

from training.policy.randomized import Estimate, PolicyInputError, dr, ips, ips_contrast, snips

__all__ = ["Estimate", "PolicyInputError", "dr", "ips", "ips_contrast", "snips"]
