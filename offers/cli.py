"""The ``offers`` command line.

Each command group lives in its own ``offers/cmd_*.py`` module exposing ``register(app)``;
this module only assembles them.
"""

from __future__ import annotations

import importlib
import logging
from enum import StrEnum
from typing import Annotated

import typer

app = typer.Typer(
    name="offers",
    help="Personalised loyalty offers: data, features, training, evaluation and serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def command_group(parent: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """The command group ``name`` of ``parent`` (shared by several modules), created if absent."""
    for info in parent.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    sub = typer.Typer(help=help_text, no_args_is_help=True)
    parent.add_typer(sub, name=name)
    return sub


def train_group(parent: typer.Typer) -> typer.Typer:
    """The shared ``train`` group (affinity, uplift)."""
    return command_group(parent, "train", "Train, log to MLflow, register and gate models.")


def evaluate_group(parent: typer.Typer) -> typer.Typer:
    """The shared ``evaluate`` group (affinity, uplift, policy)."""
    return command_group(parent, "evaluate", "Offline evaluation on held-out data.")


class CompareBpr(StrEnum):
    """``--compare-bpr``: search, fit and report BPR next to the shipped ALS blend (on), skip it
    (off), or compare it for programs of at most 200,000 members (auto)."""

    auto = "auto"
    on = "on"
    off = "off"


# one option for every command that trains affinity (train/evaluate affinity, retrain): click
# rejects another value with "Invalid value for '--compare-bpr': 'x' is not one of ..."
CompareBprOpt = Annotated[
    CompareBpr,
    typer.Option(
        help="affinity: search, fit and report BPR next to the shipped ALS blend: on, off, or "
        "auto (on for programs of at most 200,000 members); the shipped model is the same "
        "either way"
    ),
]


class CalibrationPairs(StrEnum):
    """``--calibration-pairs``: the pairs the affinity model's P(redeem) is calibrated on
    (:attr:`training.affinity.evaluate.EvalSettings.calibration_pairs`)."""

    held = "held"
    sends = "sends"


CalPairsOpt = Annotated[
    CalibrationPairs,
    typer.Option(
        help="P(redeem) calibration pairs: held (offers held in the window, redeemed inside "
        "it) or sends (sends observed whole, redeemed within their redeemable period)"
    ),
]


def check_memory_limit(value: str | None) -> str | None:
    """Typer callback of ``--memory-limit``: a size such as 4GB, else an error naming the value
    (typer adds the option's name)."""
    if value is None:
        return None
    from features.pipeline.engines import check_memory_limit as check

    try:
        check(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return value


@app.callback()
def _root() -> None:
    """Personalised loyalty offers: data, features, training, evaluation and serving."""


# Command modules, in the order their commands appear in --help.
_COMMAND_MODULES = (
    "offers.cmd_demo",
    "offers.cmd_simulate",
    "offers.cmd_import",
    "offers.cmd_data",
    "offers.cmd_catalog",
    "offers.cmd_features",
    "offers.cmd_affinity",
    "offers.cmd_uplift",
    "offers.cmd_policy",
    "offers.cmd_report",
    "offers.cmd_score",
    "offers.cmd_benchmark",
    "offers.cmd_serve",
    "offers.cmd_sessions",
    "offers.cmd_export",
    "offers.cmd_retrain",
)


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(app)


def main() -> None:
    """Entry point of the ``offers`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _register_all()
    app()


if __name__ == "__main__":
    main()
