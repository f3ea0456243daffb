"""Budgets in proportion to the program's spend (non-easy levels).

The catalog's budgets are written for a program of one million members (the convention of
``offers evaluate policy``, which scales them by members / 1,000,000). At ``easy`` the example
catalog's budgets are kept and the logged campaigns ignore them. At the other levels the total
reward budget is ``budget_rate`` x the members' yearly spend, shared among the budgeted offers
in proportion to their catalog budgets (count budgets valued at count x cost); the campaigns
then stop sending an offer once its redemptions have used its budget up.
"""

from __future__ import annotations

import numpy as np

from features.catalog.model import Budget, Catalog

__all__ = ["PER_MEMBERS", "effective_budgets", "scale_budgets"]

PER_MEMBERS = 1_000_000  # catalog budgets are per this many members


def scale_budgets(catalog: Catalog, spend_per_member_year: float, rate: float) -> Catalog:
    """The catalog with budgets = ``rate`` x yearly spend of a million members, shared out."""
    offers = catalog.offers
    worth = np.array(
        [
            0.0
            if o.budget is None
            else (o.budget.amount * o.cost if o.budget.unit == "count" else o.budget.amount)
            for o in offers
        ]
    )
    if worth.sum() <= 0:
        return catalog
    total = rate * spend_per_member_year * PER_MEMBERS
    new = []
    for o, w in zip(offers, worth, strict=True):
        if o.budget is None:
            new.append(o)
            continue
        money = total * w / worth.sum()
        if o.budget.unit == "count":
            b = Budget(count=max(1, round(money / max(o.cost, 1e-9))))
        else:
            b = Budget(money=float(max(1.0, round(money))))
        new.append(o.model_copy(update={"budget": b}))
    return catalog.model_copy(update={"offers": new})


def effective_budgets(catalog: Catalog, n_members: int) -> np.ndarray:
    """Per offer, the budget of a program of ``n_members`` in its unit (inf: no budget)."""
    scale = n_members / PER_MEMBERS
    return np.array(
        [np.inf if o.budget is None else o.budget.amount * scale for o in catalog.offers]
    )
