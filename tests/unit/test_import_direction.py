"""Imports go one way: features -> models -> serving -> training; serving never imports training.

Training may import serving: policy evaluation (``training/policy``) decides through the engine,
loader and adapter that serving ships, so the figure that proves value measures what ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# package -> the project packages it may import
ALLOWED = {
    "features": {"features"},
    "models": {"features", "models"},
    "training": {"features", "models", "training", "serving"},
    "serving": {"features", "models", "serving"},
}
PROJECT = {"features", "models", "training", "serving", "offers"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"package {package}/ has no modules"
    bad = {
        str(f.relative_to(REPO)): sorted(_imports(f) - ALLOWED[package])
        for f in files
        if _imports(f) - ALLOWED[package]
    }
    assert not bad, f"{package}/ imports what it may not: {bad}"


def test_checker_catches_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import numpy\nfrom serving.api import app\nfrom . import sibling\n")
    assert _imports(f) == {"serving"}
