"""The serving image installs only the base dependencies and the ``serve`` extra
(Dockerfile): everything the API process imports, including the packaged models' code, must
come from those (or what they require in turn), never from a distribution listed only in
another extra (train, spark, ...)."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import importlib.metadata as md, json, sys
import serving.api.app, models.affinity.pyfunc, models.uplift.pyfunc
dists = md.packages_distributions()
print(json.dumps(sorted({d for m in list(sys.modules) for d in dists.get(m.split('.')[0], [])})))
"""
# Imported by mlflow when present, not required (checked: a venv with only base + serve loads
# and serves the demo's models): psutil (system metrics), pyspark (mlflow.types.schema).
OPTIONAL = {"psutil", "pyspark"}


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>~! ;(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` require, recursively (installed metadata; no extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_serving_imports_only_base_and_serve_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    allowed = _closure({_name(r) for r in [*project["dependencies"], *extras["serve"]]})
    elsewhere = {_name(r) for name, reqs in extras.items() if name != "serve" for r in reqs}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    imported = {n.lower().replace("_", "-") for n in json.loads(out.stdout.splitlines()[-1])}
    missing = sorted((imported & elsewhere) - allowed - OPTIONAL)
    assert not missing, f"serving imports {missing}, which the serve extra does not install"
    assert {"mlflow", "implicit"} <= imported  # the probe did load the models' code
