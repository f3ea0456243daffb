"""The synthetic loyalty program, split by responsibility (see ``features.sim.simulate``).

config (knobs and fixed tables) -> members (traits) -> purchases (baseline baskets) ->
response (affinity and true effects) -> campaigns (randomised sends, events, induced baskets)
-> program (canonical tables, truth, writing).
"""

from features.sim.config import SimConfig
from features.sim.program import Program, simulate

__all__ = ["Program", "SimConfig", "simulate"]
