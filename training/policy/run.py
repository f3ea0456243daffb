"""``offers evaluate policy --dataset hillstrom|starbucks|open-bandit``: settings and report.

Settings come as ``--set KEY=VALUE`` (repeatable), checked here (an unknown key or a bad value
raises :class:`PolicyInputError` naming it):

* Hillstrom / Starbucks: ``splits`` (5), ``test_size`` (0.3), ``outcomes`` (comma list; all),
  ``cost.<outcome>`` (cost of one send in the outcome's unit), ``trees`` (boosting rounds of
  every LightGBM base model, ours and peers; 100), ``forest_trees`` (CausalML uplift random
  forest; 50), ``peers`` (``true``/``false``; peers run only when installed), ``learners``
  (ours besides the engine's, comma list), ``sample`` (evaluate a seeded subsample of rows),
  ``calibrate`` (the engine's shipped pieces: level, shrinkage, damping, lower bound; ``true``;
  ``false``: the raw learner), ``uncertainty_z`` (the engine's lower bound; default the
  engine's own, ``ScoringSettings.uncertainty_z``), ``slope_share`` (training rows held out for
  the heterogeneity slope; 0.2, ``UpliftTrainSettings.test_share``);
* Open Bandit: ``buckets`` (``day`` or ``week``), ``bootstrap`` (resamples; 200).

The JSON shapes are documented in docs/benchmarks.md ("Policy value on randomised data").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.policy.randomized import PolicyInputError

__all__ = ["DATASETS", "parse_settings", "render_markdown", "render_summary", "run_dataset"]

DATASETS = ("hillstrom", "starbucks", "open-bandit")
_ARM_KEYS = {"splits", "test_size", "outcomes", "trees", "forest_trees", "peers", "learners",
             "sample", "calibrate", "uncertainty_z", "slope_share"}  # fmt: skip
_OBD_KEYS = {"buckets", "bootstrap"}


def _int(key: str, value: str, minimum: int) -> int:
    try:
        out = int(value)
    except ValueError:
        raise PolicyInputError(f"--set {key}={value!r}: not an integer") from None
    if out < minimum:
        raise PolicyInputError(f"--set {key}={value!r}: must be >= {minimum}")
    return out


def _float(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise PolicyInputError(f"--set {key}={value!r}: not a number") from None


def parse_settings(dataset: str, items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> typed settings for ``dataset`` (see the module docstring)."""
    if dataset not in DATASETS:
        raise PolicyInputError(f"--dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    allowed = _OBD_KEYS if dataset == "open-bandit" else _ARM_KEYS
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise PolicyInputError(f"--set {item!r}: expected KEY=VALUE")
        if key.startswith("cost.") and dataset != "open-bandit":
            cost = _float(key, value)
            if cost < 0:
                raise PolicyInputError(f"--set {key}={value!r}: a cost must be >= 0")
            out.setdefault("cost", {})[key[5:]] = cost
        elif key not in allowed:
            keys = sorted(allowed | ({"cost.<outcome>"} if dataset != "open-bandit" else set()))
            raise PolicyInputError(f"--set {key!r}: unknown for {dataset}; known: {keys}")
        elif key in ("splits", "trees", "forest_trees", "bootstrap"):
            out[key] = _int(key, value, 0 if key == "bootstrap" else 1)
        elif key == "sample":
            out[key] = _int(key, value, 100)
        elif key in ("test_size", "slope_share"):
            out[key] = _float(key, value)
        elif key == "uncertainty_z":
            z = _float(key, value)
            if not 0 <= z <= 5:
                raise PolicyInputError(f"--set {key}={value!r}: must lie in [0, 5]")
            out[key] = z
        elif key in ("peers", "calibrate"):
            if value.lower() not in ("true", "false"):
                raise PolicyInputError(f"--set {key}={value!r}: expected true or false")
            out[key] = value.lower() == "true"
        elif key in ("outcomes", "learners"):
            out[key] = tuple(v.strip() for v in value.split(",") if v.strip())
        else:  # buckets
            if value not in ("day", "week"):
                raise PolicyInputError(f"--set buckets={value!r}: expected day or week")
            out[key] = value
    return out


def run_dataset(
    dataset: str,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one data set's evaluation and return its JSON report."""
    settings = dict(settings or {})
    if dataset == "open-bandit":
        from training.policy.open_bandit import run_open_bandit

        return run_open_bandit(
            data_dir, settings.get("buckets", "day"), settings.get("bootstrap", 200), seed
        )
    from training.policy import hillstrom, starbucks
    from training.policy.arms import ArmsConfig, evaluate_arms

    module = hillstrom if dataset == "hillstrom" else starbucks
    if progress:
        progress(f"{dataset}: reading the data")
    data = module.load_arms(data_dir)
    cost = {**module.DEFAULT_SEND_COST, **settings.get("cost", {})}
    unknown = set(cost) - set(data.outcomes)
    if unknown:
        raise PolicyInputError(
            f"--set cost.{sorted(unknown)[0]}: not an outcome of {dataset} "
            f"({', '.join(data.outcomes)})"
        )
    config = ArmsConfig(
        n_splits=settings.get("splits", 5),
        test_size=settings.get("test_size", 0.3),
        seed=seed,
        outcomes=settings.get("outcomes"),
        send_cost=cost,
        learners=settings.get("learners", ("S", "T", "X", "CT")),
        base_params={"n_estimators": settings["trees"]} if "trees" in settings else None,
        peers=settings.get("peers", True),
        calibrate_level=settings.get("calibrate", True),
        uncertainty_z=settings.get("uncertainty_z"),
        **({"slope_share": settings["slope_share"]} if "slope_share" in settings else {}),
        forest_trees=settings.get("forest_trees", 50),
        sample=settings.get("sample"),
    )
    return evaluate_arms(data, config, progress)


def _ci(e: dict[str, Any], digits: int = 4) -> str:
    return f"{e['value']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}]"


ENGINE_ROWS = (
    "engine",
    "engine (no LCB)",
    "engine (no LCB, no damping)",
    "engine (no LCB, no damping, no shrinkage)",
    "engine (previous)",
    "engine (refit on all rows)",
)


def _signed(rows: list[dict[str, Any]]) -> str:
    """Paired differences per split; ``*`` where the 95% interval excludes 0."""
    marks = ["*" if e["low"] > 0 or e["high"] < 0 else "" for e in rows]
    return ", ".join(f"{e['value']:+.4g}{m}" for e, m in zip(rows, marks, strict=True))


def render_summary(report: dict[str, Any]) -> str:
    """One row per outcome: the engine and its variants, the best fixed arm and the best peer
    (means over the splits of the net incremental value), and the paired differences."""
    engines = [
        n for n in ENGINE_ROWS if n in report["summary"][next(iter(report["summary"]))]["policies"]
    ]
    head = [
        "outcome",
        "send cost",
        *engines,
        "best fixed arm",
        "best peer",
        "engine − best fixed, per split",
        "engine − best peer, per split",
        "engine − engine (no LCB), per split",
        "engine − engine (previous), per split",
        "engine − engine (refit on all rows), per split",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for outcome, summary in report["summary"].items():
        pol, chosen, con = summary["policies"], summary["chosen"], summary["engine_contrasts"]
        cells = [outcome, f"{report['setup']['send_cost'][outcome]:g}"]
        cells += [f"{pol[n]['net_incremental_mean']:.4g}" for n in engines]
        for key in ("best_fixed", "best_peer"):
            name = chosen[key]
            cells.append("-" if name is None else f"{name} {pol[name]['net_incremental_mean']:.4g}")
        for key in ("best_fixed", "best_peer", "no_lcb", "previous", "refit"):
            rows = con.get(f"engine_minus_{key}")
            cells.append(_signed(rows) if rows else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _render_fits(report: dict[str, Any], outcome: str) -> list[str]:
    """The engine's fitted pieces per split: slope, scale and each arm's level."""
    runs = [r for r in report["splits"] if r["outcome"] == outcome and r.get("engine_fit")]
    if not runs:
        return []
    arms = report["arms"][1:]
    lines = [
        f"{report['dataset']} / {outcome}: the engine's pieces per split (z = "
        f"{runs[0]['engine_fit']['uncertainty_z']:g}; level = raw ATT -> shrunk ± its SE)",
        "",
        "| split | slope (SE) | scale | " + " | ".join(arms) + " |",
        "|---" * (len(arms) + 3) + "|",
    ]
    for r in runs:
        f = r["engine_fit"]
        se = "-" if f["heterogeneity_slope_se"] is None else f"{f['heterogeneity_slope_se']:.2f}"
        levels = [
            f"{a:.3g} -> {s:.3g} ± {e:.2g}"
            for a, s, e in zip(f["att"], f["shrunk"], f["shrunk_se"], strict=True)
        ]
        lines.append(
            f"| {r['split']} | {f['heterogeneity_slope']:.2f} ({se}) | "
            f"{f['heterogeneity_scale']:.2f} | " + " | ".join(levels) + " |"
        )
    return [*lines, ""]


def render_markdown(report: dict[str, Any]) -> str:
    """Markdown tables of a report (the ones in docs/benchmarks.md)."""
    if report["dataset"] == "open-bandit":
        return _render_obd(report)
    lines: list[str] = [render_summary(report), ""]
    for outcome, summary in report["summary"].items():
        runs = [r for r in report["splits"] if r["outcome"] == outcome]
        chosen = summary["chosen"]
        cost = report["setup"]["send_cost"][outcome]
        head = "| policy | " + " | ".join(f"split {r['split']}" for r in runs)
        rule = "|---" * (len(runs) + 2) + "|"
        lines += [
            f"**{report['dataset']} / {outcome}**: net incremental value per member against "
            f"sending nothing (IPS on the test rows; send cost {cost:g})",
            "",
            head + " | mean |",
            rule,
        ]
        for name in ["engine", *[n for n in summary["policies"] if n != "engine"]]:
            mark = " (best fixed)" if name == chosen["best_fixed"] else ""
            mark += " (best peer)" if name == chosen["best_peer"] else ""
            cells = [f"{r['policies'][name]['net_incremental']['value']:.4f}" for r in runs]
            mean = summary["policies"][name]["net_incremental_mean"]
            lines.append(f"| {name}{mark} | " + " | ".join(cells) + f" | {mean:.4f} |")
        lines += ["", f"{report['dataset']} / {outcome}: 95% intervals", "", head + " |",
                  "|---" * (len(runs) + 1) + "|"]  # fmt: skip
        shown = [(n, n) for n in ENGINE_ROWS if n in summary["policies"]]
        for label, name in (*shown, ("best fixed", chosen["best_fixed"]),
                            ("best peer", chosen["best_peer"])):  # fmt: skip
            if name is None:
                continue
            cells = [_ci(r["policies"][name]["net_incremental"]) for r in runs]
            title = label if label == name else f"{label} ({name})"
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
        for label, rows in summary["engine_contrasts"].items():
            if label.endswith(("causalml", "sklift")):
                continue
            cells = [_ci(e) for e in rows]
            lines.append(f"| {label.replace('_', ' ')} (paired) | " + " | ".join(cells) + " |")
        lines.append("")
        lines += _render_fits(report, outcome)
    return "\n".join(lines)


def _render_obd(report: dict[str, Any]) -> str:
    on = report["on_policy"]
    lines = [
        f"On-policy value of BTS (mean click of its {report['rows']['bts']:,} logged "
        f"impressions, {report['clicks']['bts']} clicks): {_ci(on, 5)}",
        "",
        "| buckets | estimator | estimate [95% interval] | relative error | "
        "bootstrap mean relative error ± sd |",
        "|---|---|---|---|---|",
    ]
    for bucket, block in report["by_buckets"].items():
        for name, e in block["estimates"].items():
            boot = block["bootstrap"].get(name)
            b = (
                f"{boot['relative_error_mean']:.3f} ± {boot['relative_error_std']:.3f}"
                if boot
                else "-"
            )
            lines.append(
                f"| {bucket} | {name.upper()} | {_ci(e, 5)} | {e['relative_error']:.3f} | {b} |"
            )
    anchors = ", ".join(f"{k.upper()} {v}" for k, v in report["anchors_obp"].items())
    null = report["null_reference"]
    lines += [
        "",
        f"Null reference (the random logs' own mean click, no evaluation at all): "
        f"{null['value']:.5f}, relative error {null['relative_error']:.3f}. "
        f"Open Bandit Pipeline anchors (relative error): {anchors}.",
        "",
    ]
    return "\n".join(lines)
