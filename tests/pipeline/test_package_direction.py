"""The packages import each other in one direction only (README, "Layout"), and the modules within a
package import each other without a circle, checked on every import statement, including those inside
functions (where a circle hides: it fails only when the imports run in one order)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "stages", "rewards", "data_recipes", "launch")

# What each package may import of the others. pipeline reaches stages only through their contract, the
# stage file schema, the kind table and the models gradus makes (stages.models, torch-free until it makes
# one: the plan compares the tiny tokenizer's vocabulary with a teacher's); a stage runs in its own process and never imports the pipeline that launched it.
MAY_IMPORT = {
    "launch": set(),
    "data_recipes": set(),
    "rewards": {"data_recipes"},
    "stages": {"data_recipes", "rewards", "launch"},
    "pipeline": {"data_recipes", "rewards", "launch", "stages.arguments", "stages.kinds", "stages.models"},
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module in PACKAGES:  # `from stages import arguments` imports stages.arguments
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def violations(repo: Path) -> list[str]:
    wrong = []
    for package in PACKAGES:
        allowed = MAY_IMPORT[package] | {package}
        for path in sorted((repo / package).rglob("*.py")):
            for name in imported_modules(path):
                if name.split(".")[0] not in PACKAGES:
                    continue
                within = any(name == rule or name.startswith(rule + ".") for rule in allowed)
                above = any(rule.startswith(name + ".") for rule in allowed)  # `from stages import arguments` also names `stages`
                if not (within or above):
                    wrong.append(f"{path.relative_to(repo)} imports {name}")
    return wrong


def module_name(repo: Path, path: Path) -> str:
    parts = path.relative_to(repo).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def circles(repo: Path) -> list[list[str]]:
    """Every import circle among the modules of one package, each as the modules along it (first repeated last)."""
    found: list[list[str]] = []
    for package in PACKAGES:
        modules = {module_name(repo, path): path for path in sorted((repo / package).rglob("*.py"))}
        edges = {name: sorted(imported & set(modules) - {name}) for name, path in modules.items()
                 for imported in [imported_modules(path)]}
        done: set[str] = set()

        def visit(name: str, trail: list[str]) -> None:
            if name in trail:
                found.append(trail[trail.index(name):] + [name])
                return
            if name in done:
                return
            for imported in edges[name]:
                visit(imported, trail + [name])
            done.add(name)

        for name in modules:
            visit(name, [])
    return found


# Still to undo: a package's __init__ re-exports a submodule that takes a helper (`suggest`, `RecipeError`, ...)
# from that same __init__. Listed so none is added; remove a line when its circle goes.
KNOWN_CIRCLES = [
    ["rewards", "rewards.registry", "rewards.math_accuracy", "rewards"],
    ["data_recipes", "data_recipes.accepted_samples", "data_recipes"],
    ["data_recipes", "data_recipes.math_sets", "data_recipes"],
    ["data_recipes", "data_recipes.prm_formats", "data_recipes"],
    ["data_recipes", "data_recipes.synthetic", "data_recipes"],
]


def test_no_module_imports_itself_round_a_circle_within_a_package():
    assert circles(REPO) == KNOWN_CIRCLES


def test_a_circle_through_a_function_level_import_is_caught(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "manifest.py").write_text("def load():\n    from pipeline.overrides import apply\n")
    (tmp_path / "pipeline" / "overrides.py").write_text("from pipeline.manifest import Manifest\n")
    assert circles(tmp_path) == [["pipeline.manifest", "pipeline.overrides", "pipeline.manifest"]]


def test_every_import_between_packages_runs_one_way():
    assert violations(REPO) == []


def test_an_import_against_the_direction_is_caught(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "runner.py").write_text("def f():\n    from stages.common import start\n")
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "prm.py").write_text("import stages.prm_steps\nfrom data_recipes import suggest\n")
    assert violations(tmp_path) == ["pipeline/runner.py imports stages.common", "rewards/prm.py imports stages.prm_steps"]
