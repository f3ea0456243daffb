"""The README's environment table names exactly the variables the settings tree reads
(``serving.settings.Settings`` and its sections), every settings class is a section of that
tree, and library code reads the environment only through it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from serving.settings import Settings

REPO = Path(__file__).resolve().parents[2]
LIBRARY = ("features", "models", "training", "serving")
# read directly on purpose: Spark's own variable, checked (not set) before starting workers
DIRECT_READS = {("serving/batch/spark.py", "PYSPARK_PYTHON")}


def _settings_classes() -> set[type[BaseSettings]]:
    """Every pydantic-settings class defined in the project's packages."""
    for package in (*LIBRARY, "offers"):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            if "migrations" not in info.name and not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found: set[type[BaseSettings]] = set()
    todo = list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.split(".")[0] in (*LIBRARY, "offers"):
            found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def _sections() -> dict[str, type[BaseSettings]]:
    """The root's sections: field name -> settings class."""
    return {name: field.annotation for name, field in Settings.model_fields.items()}  # type: ignore[misc]


def _variables(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    if prefix == "OFFERS_ENGINE_":  # nested groups: one table row names the pattern
        return {"OFFERS_ENGINE_<FIELD>"}
    out = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            out |= {str(a) for a in alias.choices}
        elif isinstance(alias, str):
            out.add(alias)
        else:
            out.add(prefix.upper() + name.upper())
    return out


def test_every_settings_class_is_a_section_of_the_one_tree():
    sections = _sections()
    assert set(sections) == {
        "data", "features", "registry", "training", "serving", "store", "engine"
    }  # fmt: skip
    stray = _settings_classes() - set(sections.values()) - {Settings}
    assert stray == set(), f"settings classes outside the tree (serving.settings.Settings): {stray}"
    names = {cls.__name__ for cls in sections.values()}
    assert all(n.endswith("Settings") for n in names), names


def test_sections_read_disjoint_variables():
    seen: dict[str, str] = {}
    for section, cls in _sections().items():
        for var in _variables(cls):
            assert var not in seen, f"{var} is read by both {seen[var]} and {section}"
            seen[var] = section


def _readme_variables() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Environment\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {
        name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_<>]+)`", row.split("|")[1])
    }


def test_readme_table_equals_the_settings_tree():
    code = set().union(*(_variables(c) for c in _sections().values()))
    readme = _readme_variables() - {"OFFERS_ENGINE_<GROUP>__<FIELD>"}
    assert code - readme == set(), f"settings missing from the README table: {code - readme}"
    assert readme - code == set(), (
        f"README names variables no section of the settings tree reads: {readme - code}"
    )


def _direct_reads(path: Path) -> set[str]:
    """Names read with ``os.environ.get``/``os.getenv``/``os.environ[...]`` (not writes)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = ast.unparse(node.func)
            if f in ("os.environ.get", "os.getenv") and node.args:
                names.add(ast.unparse(node.args[0]).strip("'\""))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and ast.unparse(node.value) == "os.environ"
        ):
            names.add(ast.unparse(node.slice).strip("'\""))
    return names


def test_library_code_reads_the_environment_only_through_settings():
    reads = {
        (str(p.relative_to(REPO)), name)
        for package in LIBRARY
        for p in sorted((REPO / package).rglob("*.py"))
        for name in _direct_reads(p)
    }
    assert reads - DIRECT_READS == set(), f"read the environment directly: {reads - DIRECT_READS}"


def test_direct_read_check_catches_a_read(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import os\na = os.environ.get('X')\nb = os.environ['Y']\nos.environ['Z'] = '1'\n")
    assert _direct_reads(f) == {"X", "Y"}
