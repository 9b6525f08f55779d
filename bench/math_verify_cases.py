"""Math-Verify's own test cases scored by gradus's `math_accuracy` (both extractions) and by math-verify.

Run from the repository root:
    python -m bench.math_verify_cases                     # score the committed cases, write the results
    python -m bench.math_verify_cases --extract GIT_DIR   # rebuild bench/math_verify_cases.json first

The cases are the (gold, prediction, expected) rows of the `pytest.mark.parametrize` tables in
Math-Verify's tests/ at commit 5d148cf (https://github.com/huggingface/Math-Verify, Apache License 2.0;
tests/test_all.py carries an MIT notice, Copyright (c) 2024 The HuggingFace Team). `--extract` reads them
from a git mirror of that repository with `git show`, parses each test file with `ast` and keeps every row
written as literals (the one row built by an f-string, a precision test, is left out), with the
comparison options its test passes (`precision`, `strict`, `allow_set_relation_comp`).

In scope are the rows whose test compares with math-verify's default options: 261 of the 268. Each
is scored as issue 25 describes: the prediction is the completion, the gold the `answer` column. A row
is credited when the scorer says what the test expects: 1.0 for expected 1, and for expected 0 a 0.0
or a None (the gold read as no math: nothing credited). Scorers: `math_accuracy` with
`extraction="boxed"` (the training default) and `"lenient"`, and math-verify itself
(`verify(parse(gold), parse(prediction))`, its defaults, as its tests do without options). The results
folder gets every row's scores (results.json) and each row that some scorer is not credited on
(differences.md).

The scorer `boxed` builds `MathAccuracy()` with no option, so the same file can score an older
`rewards` package: `cd OLD_CHECKOUT && python /path/to/bench/math_verify_cases.py --scorers boxed`.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "bench" / "math_verify_cases.json"
RESULTS = REPO / "bench" / "math_verify_cases_results"
COMMIT = "5d148cfaaf99214c2e4ffb4bc497ab042c592a7a"
SOURCE = "https://github.com/huggingface/Math-Verify"
# math-verify's comparison options as `verify` defaults them; a row that sets another value is out of scope.
DEFAULT_OPTIONS = {"precision": 6, "strict": True, "allow_set_relation_comp": False}
ROW_FIELDS = ("gold", "pred", "expected", "result")  # test_yujianll names its expectation `result`
SCORERS = ("boxed", "lenient", "math-verify")


def extract(git_dir: Path, commit: str) -> list[dict]:
    """Every literal (gold, prediction, expected) row of the test files at `commit`, with its options."""
    names = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "-r", "--name-only", commit, "tests/"], check=True, capture_output=True, text=True
    ).stdout.split()
    cases = []
    for name in sorted(names):
        if not name.endswith(".py"):
            continue
        source = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{name}"], check=True, capture_output=True, text=True).stdout
        for test, row in _rows(ast.parse(source)):
            cases.append({"id": len(cases), "file": name, "test": test, **row})
    return cases


def _rows(tree: ast.Module) -> Iterator[tuple[str, dict]]:
    """(test name, row) for each literal row of a parametrize table with a gold and a prediction."""
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
        fixed = _fixed_options(function)
        for decorator in function.decorator_list:
            if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize"):
                continue
            argnames = ast.literal_eval(decorator.args[0])
            fields = [field.strip() for field in (argnames.split(",") if isinstance(argnames, str) else argnames)]
            if not {"gold", "pred"} <= set(fields):
                continue
            for element in decorator.args[1].elts:
                try:
                    values = dict(zip(fields, ast.literal_eval(element), strict=True))
                except ValueError:
                    continue  # built by code (an f-string), not written as literals
                options = fixed | {key: value for key, value in values.items() if key not in ROW_FIELDS}
                expected = values["expected"] if "expected" in values else values["result"]
                yield function.name, {"gold": values["gold"], "pred": values["pred"], "expected": int(expected), "options": options}


def _fixed_options(function: ast.FunctionDef) -> dict:
    """Comparison options a test passes as constants (`compare_strings(..., precision=5)`)."""
    return {
        keyword.arg: keyword.value.value
        for call in ast.walk(function)
        if isinstance(call, ast.Call)
        for keyword in call.keywords
        if keyword.arg in DEFAULT_OPTIONS and isinstance(keyword.value, ast.Constant)
    }


def in_scope(case: dict) -> bool:
    """Whether the row's test compares with math-verify's default options."""
    return all(DEFAULT_OPTIONS[key] == value for key, value in case["options"].items())


def scorer(name: str) -> Callable[[list[dict]], list[float | None]]:
    """The scores of one scorer for a list of cases (predictions as completions, golds as `answer`)."""
    if name == "math-verify":
        from math_verify import parse, verify

        return lambda cases: [float(verify(parse(case["gold"]), parse(case["pred"]))) for case in cases]
    from rewards.math_accuracy import MathAccuracy

    def score(cases: list[dict]) -> list[float | None]:
        # Inline, in this main thread: math-verify's signal timeouts work, no worker pool is started.
        reward = MathAccuracy(parallel_threshold=len(cases) + 1, **({} if name == "boxed" else {"extraction": name}))
        return reward(["?"] * len(cases), [case["pred"] for case in cases], answer=[case["gold"] for case in cases])

    return score


def credited(score: float | None, expected: int) -> bool:
    """Whether a score says what the test expects (a None credits nothing, as a 0.0)."""
    return (score or 0.0) == expected


def differences(cases: list[dict], scores: dict[str, list[float | None]]) -> list[str]:
    """Markdown: each row that some scorer is not credited on, with every scorer's score."""
    lines = ["| id | test | expected | " + " | ".join(scores) + " | gold | prediction (end) |", "|---" * (5 + len(scores)) + "|"]
    for index, case in enumerate(cases):
        row = {name: values[index] for name, values in scores.items()}
        if all(credited(score, case["expected"]) for score in row.values()):
            continue
        shown = " | ".join(str(score) for score in row.values())
        lines.append(f"| {case['id']} | {case['test']} | {case['expected']} | {shown} | `{_cell(case['gold'][-120:])}` | `{_cell(case['pred'][-120:])}` |")
    return lines


def _cell(text: str) -> str:
    """Text for a markdown table cell: control characters (a newline, the tests' stray form feed) escaped."""
    printable = "".join(character if character.isprintable() else f"\\x{ord(character):02x}" for character in text)
    return printable.replace("|", "\\|").replace("`", "'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", type=Path, metavar="GIT_DIR", help="rebuild the cases from this Math-Verify git mirror first")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--scorers", nargs="+", choices=SCORERS, default=list(SCORERS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for results.json and differences.md")
    arguments = parser.parse_args()
    if arguments.extract:
        cases = extract(arguments.extract, arguments.commit)
        document = {"source": SOURCE, "commit": arguments.commit, "license": "Apache-2.0 (tests/test_all.py: MIT, The HuggingFace Team)", "cases": cases}
        CASES.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    cases = json.loads(CASES.read_text(encoding="utf-8"))["cases"]
    scoped = [case for case in cases if in_scope(case)]
    print(f"{len(cases)} literal rows, {len(scoped)} in scope (math-verify's default comparison options)")
    scores = {name: scorer(name)(scoped) for name in arguments.scorers}
    for name, values in scores.items():
        right = sum(credited(score, case["expected"]) for score, case in zip(values, scoped, strict=True))
        unusable = sum(score is None for score in values)
        print(f"{name:12s} credited as expected: {right} of {len(scoped)} (gold read as no math: {unusable})")
    arguments.results.mkdir(parents=True, exist_ok=True)
    rows = [{"id": case["id"], "expected": case["expected"], **{name: values[index] for name, values in scores.items()}} for index, case in enumerate(scoped)]
    (arguments.results / "results.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    (arguments.results / "differences.md").write_text("\n".join(differences(scoped, scores)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
