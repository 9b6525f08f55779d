"""The packages import each other in one direction only (README, "Layout"), checked on every import
statement, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "stages", "rewards", "data_recipes", "launch")

# What each package may import of the others. pipeline reaches stages only through their contract, the
# stage file schema and the kind table; a stage runs in its own process and never imports the pipeline that launched it.
MAY_IMPORT = {
    "launch": set(),
    "data_recipes": set(),
    "rewards": {"data_recipes"},
    "stages": {"data_recipes", "rewards", "launch"},
    "pipeline": {"data_recipes", "rewards", "launch", "stages.arguments", "stages.kinds"},
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


def test_every_import_between_packages_runs_one_way():
    assert violations(REPO) == []


def test_an_import_against_the_direction_is_caught(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "runner.py").write_text("def f():\n    from stages.common import start\n")
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "prm.py").write_text("import stages.prm_steps\nfrom data_recipes import suggest\n")
    assert violations(tmp_path) == ["pipeline/runner.py imports stages.common", "rewards/prm.py imports stages.prm_steps"]
