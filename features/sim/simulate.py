"""A seeded synthetic loyalty program with known ground truth (the embedded default data).

``simulate(n_members, seed, config) -> Program`` returns the four canonical tables (members,
offers, transactions, offer_events), the catalog it used and the ground truth;
``Program.write(dir)`` writes them (truth under ``dir/truth/``, which only evaluation reads).
Same seed and config -> byte-identical files. Everything is vectorised with numpy (loops run
over campaigns, offers and categories only). The implementation lives in ``features.sim``.

The model (details and parameters in ``docs/simulator.md``):

* **Time.** A fixed observation end ``SimConfig.end`` (default 2026-10-31, naive UTC); nothing is
  generated at or after it and the wall clock is never read. Purchases cover the last
  ``history_days`` (365).
* **Members.** Join dates over up to 8 years (7 % in the last 60 days, the rest exponential
  with a mean tenure of ~2.2 years), birth dates and age, gender, income, region, one of five
  segments (commuter, family, bargain_hunter, premium, casual), e-mail / app opt-in. Latent:
  category preferences (Dirichlet, concentration by segment), price sensitivity (Beta), a
  purchase rate (Gamma around ``baskets_per_year``), a lapse time for ``churn_share`` of the
  members (activity stops, some long before the history starts), responsiveness per offer kind
  (log-normal, shifted by segment), view probability, an incrementality shift.
* **Purchases.** Poisson baskets while a member is active, thinned by a day-of-week weight
  (weekends busier) with an hour-of-day profile; 1-3 lines per basket, each line's category
  drawn from the member's preferences, amounts from category price levels x member spend scale
  x log-normal noise x quantity. ``transactions`` holds one row per line.
* **Tiers and points.** 1 point per currency unit spent over the trailing 12 months; tier from
  ``tier_thresholds`` (bronze/silver/gold/platinum); the points balance is the unspent share of
  those points plus bonus points from redeemed ``bonus_points`` offers.
* **Campaigns.** ``n_campaigns`` sends alternating e-mail and app, each targeting a random share
  of the opted-in members; eligibility (tier, lifecycle stage, segment, points, moment, cap) is
  evaluated on what is observable at the send. Assignment is randomised: a control share gets a
  ``held_out`` event (propensity = control share), the others one eligible offer drawn
  uniformly (propensity = (1 - control share) / number eligible). Events: sent, viewed,
  redeemed, dismissed, held_out.
* **Response and effects.** ``features.sim.response``: an affinity alpha(member, offer) from
  category preference, kind responsiveness, price sensitivity, value and minimum spend; the
  send induces an extra basket with probability q = alpha x incrementality; redemptions happen
  on induced baskets or, with probability alpha, on a baseline basket in the offer's duration.
  The true effects are tau_conversion = q (1 - p0) and tau_spend = q x mean induced basket.
  Control members buy at their baseline rate only.
* **Truth** (``Program.truth``, written to ``truth/``): ``affinity`` (member_id, offer_id,
  P(redeem | sent) for a send at ``end``), ``effects`` (member_id, offer_id, tau_conversion,
  tau_spend over a 14-day window after a send at ``end``; float32), ``members_latent`` (the
  latent traits) and ``assignments`` (one row per campaign assignment with the send-time
  baseline probability and true effects, for known-answer checks of uplift estimates).
* **Difficulty** (``SimConfig.difficulty``, ``offers simulate --difficulty``): ``easy`` (the
  default) is the model above, byte for byte. ``realistic`` is calibrated to real data
  (docs/simulator.md): persuasion scaled down with per-pair noise, harm (a send can suppress a
  baseline basket), pull-forward, fatigue, a weaker reach of lapsed members, redemptions only
  on qualifying baskets, auto-applied offers redeemed without a view, a noisy published
  segment and budgets in proportion to spend that the logged campaigns respect. ``hard``
  halves persuasion again and doubles harm. ``truth/difficulty.json`` records the level.
"""

from features.sim.config import CATEGORIES, DIFFICULTIES, SEGMENTS, Difficulty, SimConfig
from features.sim.program import Program, simulate

__all__ = [
    "CATEGORIES",
    "DIFFICULTIES",
    "SEGMENTS",
    "Difficulty",
    "Program",
    "SimConfig",
    "simulate",
]
