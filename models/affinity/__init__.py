"""Next-best reward affinity: collaborative filtering over members x (offers + what they buy).

Public API::

    data = build_interactions(tables, as_of, InteractionSettings())   # confidence matrix
    model = ALS(factors=64).fit(data)          # or BPR, Popularity, SegmentPopularity,
                                               # PersonalPopularity, Blend (the shipped one)
    offers = data.items_of_kind("offer")
    ranking = model.rank(data.take(rows), offers, k=10)               # only these items
    save_model(model, "model.npz"); load_model("model.npz")           # plain arrays

Errors: :class:`AffinityInputError` (bad input, names the field and value) and its subclass
:class:`NotFittedError`.
"""

from models.affinity.base import (
    FALLBACKS,
    GLOBAL,
    PERSONALISED,
    SEGMENT,
    AffinityModel,
    NotFittedError,
    Ranking,
    top_k,
)
from models.affinity.blend import Blend
from models.affinity.calibration import RedeemCalibrator, brier_score, reliability_curve
from models.affinity.factorization import ALS, BPR
from models.affinity.foldin import FoldIn, as_new_members, basket_keys, basket_rows, member_rows
from models.affinity.interactions import (
    ITEM_KINDS,
    AffinityInputError,
    Interactions,
    InteractionSettings,
    build_interactions,
    item_key,
    item_kind,
)
from models.affinity.persist import MODEL_CLASSES, load_model, save_model
from models.affinity.popularity import PersonalPopularity, Popularity, SegmentPopularity

__all__ = [
    "ALS",
    "BPR",
    "FALLBACKS",
    "GLOBAL",
    "ITEM_KINDS",
    "MODEL_CLASSES",
    "PERSONALISED",
    "SEGMENT",
    "AffinityInputError",
    "AffinityModel",
    "Blend",
    "FoldIn",
    "InteractionSettings",
    "Interactions",
    "NotFittedError",
    "PersonalPopularity",
    "Popularity",
    "Ranking",
    "RedeemCalibrator",
    "SegmentPopularity",
    "as_new_members",
    "basket_keys",
    "basket_rows",
    "brier_score",
    "build_interactions",
    "item_key",
    "item_kind",
    "load_model",
    "member_rows",
    "reliability_curve",
    "save_model",
    "top_k",
]
