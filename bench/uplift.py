"""Uplift benchmark on every data set, then native vs onnxruntime latency of the chosen learner.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/uplift.py                 # everything
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/uplift.py --skip-benchmark  # latency only

Writes one JSON report and its Markdown tables per data set to ``--out`` (default
``.offers/bench``) and prints the tables (as ``offers benchmark uplift`` does), and PNG Qini and
uplift curves of our learners on Hillstrom Womens E-Mail / visit. Then it prints
latency, median of several runs: one row at a time and batches of 1,000 and 10,000 rows,
native vs onnxruntime, as a ratio. Peer libraries (the ``bench`` extra) are used when
installed; without them only ours runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from models.uplift import LEARNERS
from models.uplift.onnx_export import OnnxUpliftPredictor, export_onnx
from offers.cmd_benchmark import render_report
from training.uplift.benchmark import (
    LIBRARIES,
    BenchmarkConfig,
    missing_libraries,
    report_markdown,
    run_benchmark,
)
from training.uplift.datasets import DATASETS, load_dataset
from training.uplift.metrics import plot_qini_curve, plot_uplift_curve

console = Console()


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency(learner: str, base_learner: str, base_params: dict | None) -> None:
    """Fit ``learner`` on Hillstrom (both e-mails vs none), export it, time both predictors."""
    data = load_dataset("hillstrom")
    X = data.X.to_numpy(np.float64)
    y = data.outcomes["visit"]
    model = LEARNERS[learner](
        base_learner=base_learner, base_params=base_params, control=data.control
    ).fit(X, y, data.treatment)
    blob = export_onnx(model)
    onnx_model = OnnxUpliftPredictor(blob)
    parity = float(np.abs(onnx_model.predict(X[:10_000]) - model.predict(X[:10_000])).max())

    table = Table(title=f"{learner}-learner ({base_learner}) on Hillstrom: predict latency")
    for col in ("rows", "native", "onnxruntime", "native / onnx"):
        table.add_column(col, justify="right")
    single_rows = [X[i : i + 1] for i in range(200)]
    Predict = Callable[[np.ndarray], np.ndarray]

    def per_row(predict: Predict) -> Callable[[], object]:
        return lambda: [predict(r) for r in single_rows]

    def batch(n: int) -> Callable[[Predict], Callable[[], object]]:
        return lambda predict: lambda: predict(X[:n])

    Case = tuple[str, Callable[[Predict], Callable[[], object]], int, int]
    cases: list[Case] = [("1 (per row)", per_row, 5, len(single_rows))]
    cases += [(f"{n:,}", batch(n), 7, 1) for n in (1_000, 10_000)]
    for label, make, repeats, divisor in cases:
        native = _median_seconds(make(model.predict), repeats) / divisor
        served = _median_seconds(make(onnx_model.predict), repeats) / divisor
        table.add_row(label, _fmt(native), _fmt(served), f"{native / served:.1f}x")
    console.print(table)
    console.print(
        f"ONNX model {len(blob) / 1024:.0f} KiB, treatments {onnx_model.treatments}; "
        f"max |onnx - native| on 10,000 rows = {parity:.2e}"
    )


def plot_curves(out: Path, base_learner: str, base_params: dict | None) -> None:
    """Qini and uplift curves of our learners, Hillstrom Womens E-Mail / visit, one 70/30 split."""
    from sklearn.model_selection import train_test_split

    data = load_dataset("hillstrom")
    rows = np.isin(data.treatment, ["Womens E-Mail", data.control])
    X = data.X.to_numpy(np.float64)[rows]
    t = (data.treatment[rows] == "Womens E-Mail").astype(int)
    y = data.outcomes["visit"][rows]
    X_tr, X_te, y_tr, y_te, t_tr, t_te = train_test_split(
        X, y, t, test_size=0.3, random_state=0, stratify=t * 2 + y
    )
    scores = {
        f"{name}-learner": cls(base_learner=base_learner, base_params=base_params)
        .fit(X_tr, y_tr, t_tr)
        .predict(X_te)[:, 0]
        for name, cls in LEARNERS.items()
    }
    title = "Hillstrom, Womens E-Mail vs none, visit (test 30%)"
    for path in (
        plot_qini_curve(y_te, scores, t_te, out / "qini_hillstrom_womens_visit.png", title=title),
        plot_uplift_curve(
            y_te, scores, t_te, out / "uplift_hillstrom_womens_visit.png", title=title
        ),
    ):
        console.print(f"wrote {path}")


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--base-learner", default="lightgbm", choices=("lightgbm", "hgb"))
    parser.add_argument("--base-params", default=None, help="JSON object of overrides")
    parser.add_argument("--learner", default="S", choices=sorted(LEARNERS), help="for latency")
    parser.add_argument("--out", type=Path, default=Path(".offers/bench"))
    parser.add_argument("--skip-benchmark", action="store_true")
    args = parser.parse_args()
    params = json.loads(args.base_params) if args.base_params else None

    if not args.skip_benchmark:
        libraries = tuple(lib for lib in LIBRARIES if lib not in missing_libraries(LIBRARIES))
        if len(libraries) < len(LIBRARIES):
            console.print(f"[yellow]peer libraries missing, running only {libraries}[/]")
        config = BenchmarkConfig(
            n_splits=args.splits,
            base_learner=args.base_learner,
            base_params=params,
            libraries=libraries,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        for name in args.datasets.split(","):
            start = time.perf_counter()
            report = run_benchmark(load_dataset(name), config)
            path = args.out / f"uplift_{name}.json"
            path.write_text(json.dumps(report, indent=2) + "\n")
            path.with_suffix(".md").write_text(report_markdown(report))
            render_report(report, console)
            console.print(f"{name}: {time.perf_counter() - start:.0f} s, report in {path}\n")
        plot_curves(args.out, args.base_learner, params)
    latency(args.learner, args.base_learner, params)


if __name__ == "__main__":
    main()
