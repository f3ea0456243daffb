"""E-mail batch scoring: a campaign file -> one decision file for the whole send.

Public API::

    campaign = load_campaign("campaign.yaml")
    plan = SendPlan.create(campaign, catalog)              # engine, budgets, context
    result = run_local(campaign, plan, scorer, features_parquet, Path("send.parquet"))
    result = run_spark(spark, campaign, plan, scorer, features_parquet, Path("send.parquet"))

Errors: :class:`CampaignError` (a bad campaign file, naming the field), :class:`ResumeError`
(parts of another run), :class:`ScorerError` (models that cannot be loaded). See docs/batch.md.
"""

from serving.batch.campaign import (
    DEFAULT_MODELS,
    Campaign,
    CampaignError,
    load_campaign,
    parse_campaign,
)
from serving.batch.local import BatchResult, ResumeError, run_local
from serving.batch.output import OUTPUT_COLUMNS
from serving.batch.plan import SendPlan
from serving.batch.scorers import (
    ModelScorer,
    ScorerError,
    SyntheticScorer,
    load_scorer,
    scorer_feature_config,
)

__all__ = [
    "DEFAULT_MODELS",
    "OUTPUT_COLUMNS",
    "BatchResult",
    "Campaign",
    "CampaignError",
    "ModelScorer",
    "ResumeError",
    "ScorerError",
    "SendPlan",
    "SyntheticScorer",
    "load_campaign",
    "load_scorer",
    "parse_campaign",
    "run_local",
    "scorer_feature_config",
]
