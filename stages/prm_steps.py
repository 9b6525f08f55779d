"""The PRM trainer's step-level metrics: AUC, ROC curve, F1 and first-error accuracy.

Used by the `prm` stage (held-out metrics) and the PRM benches. The step format itself (splitting,
tokenization, scoring, aggregation) is `rewards.steps`, which the `prm` reward shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

THRESHOLD = 0.5


def hard(label: float | bool) -> bool:
    """A soft label as right (True) or wrong: at least 0.5."""
    return float(label) >= THRESHOLD


def auc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None with one class."""
    pairs = sorted(zip(scores, positives), key=lambda pair: pair[0])
    n_positive = sum(1 for _, positive in pairs if positive)
    n_negative = len(pairs) - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    rank_sum, index = 0.0, 0
    while index < len(pairs):
        end = index
        while end + 1 < len(pairs) and pairs[end + 1][0] == pairs[index][0]:
            end += 1
        average_rank = (index + end) / 2 + 1
        rank_sum += average_rank * sum(1 for _, positive in pairs[index : end + 1] if positive)
        index = end + 1
    return (rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


def roc_curve(scores: Sequence[float], positives: Sequence[bool]) -> tuple[list[float], list[float]]:
    """(false positive rates, true positive rates) as the threshold falls through the scores."""
    n_positive = sum(positives)
    n_negative = len(positives) - n_positive
    if not n_positive or not n_negative:
        return [0.0, 1.0], [0.0, 1.0]
    fpr, tpr, true_pos, false_pos = [0.0], [0.0], 0, 0
    pairs = sorted(zip(scores, positives), key=lambda pair: -pair[0])
    for index, (score, positive) in enumerate(pairs):
        true_pos += positive
        false_pos += not positive
        if index + 1 == len(pairs) or pairs[index + 1][0] != score:
            fpr.append(false_pos / n_negative)
            tpr.append(true_pos / n_positive)
    return fpr, tpr


def _f1(true_pos: int, false_pos: int, false_neg: int) -> float | None:
    if 2 * true_pos + false_pos + false_neg == 0:
        return None
    return 2 * true_pos / (2 * true_pos + false_pos + false_neg)


def first_wrong(flags_right: Sequence[bool]) -> int:
    """Index of the first step marked wrong, or -1 if none."""
    return next((index for index, right in enumerate(flags_right) if not right), -1)


def step_metrics(truth: Sequence[Sequence[bool]], scores: Sequence[Sequence[float]], threshold: float = THRESHOLD) -> dict[str, Any]:
    """Step-level metrics of PRM scores against right/wrong step truth, one list per solution.

    A step is predicted right when its score is at least `threshold`. Reported:
      auc                     step-level ROC AUC (None when the truth has one class)
      f1, error_f1            F1 with right steps as the positive class, and with wrong steps (PRMBench's
                              "negative F1"); prm_score is their mean (PRMBench's PRMScore)
      step_accuracy
      first_error_accuracy    over solutions with a wrong step: is the first step predicted wrong exactly
                              the first wrong step?
      first_error_flagged     over the same solutions: is the first wrong step predicted wrong? (PRMBench's
                              first_error_acc, which ignores earlier false alarms)
      all_correct_accuracy    over solutions whose steps are all right: is every step predicted right?
    Steps without a score (cut by max_length) are left out, truth included.
    """
    flat_scores: list[float] = []
    flat_truth: list[bool] = []
    first_exact = first_flagged = all_correct_hits = 0
    with_error = all_correct = 0
    for solution_truth, solution_scores in zip(truth, scores, strict=True):
        solution_truth = [bool(value) for value in solution_truth][: len(solution_scores)]
        solution_scores = list(solution_scores)[: len(solution_truth)]
        if not solution_truth:
            continue
        flat_scores += solution_scores
        flat_truth += solution_truth
        predicted = [score >= threshold for score in solution_scores]
        true_first = first_wrong(solution_truth)
        if true_first >= 0:
            with_error += 1
            first_exact += first_wrong(predicted) == true_first
            first_flagged += not predicted[true_first]
        else:
            all_correct += 1
            all_correct_hits += all(predicted)
    predicted_flat = [score >= threshold for score in flat_scores]
    true_pos = sum(p and t for p, t in zip(predicted_flat, flat_truth))
    false_pos = sum(p and not t for p, t in zip(predicted_flat, flat_truth))
    false_neg = sum(not p and t for p, t in zip(predicted_flat, flat_truth))
    true_neg = len(flat_truth) - true_pos - false_pos - false_neg
    f1, error_f1 = _f1(true_pos, false_pos, false_neg), _f1(true_neg, false_neg, false_pos)
    return {
        "auc": auc(flat_scores, flat_truth),
        "f1": f1,
        "error_f1": error_f1,
        "prm_score": None if f1 is None or error_f1 is None else (f1 + error_f1) / 2,
        "step_accuracy": (true_pos + true_neg) / len(flat_truth) if flat_truth else None,
        "first_error_accuracy": first_exact / with_error if with_error else None,
        "first_error_flagged": first_flagged / with_error if with_error else None,
        "all_correct_accuracy": all_correct_hits / all_correct if all_correct else None,
        "steps": len(flat_truth),
        "wrong_steps": len(flat_truth) - sum(flat_truth),
        "solutions_with_error": with_error,
        "all_correct_solutions": all_correct,
        "mean_score": sum(flat_scores) / len(flat_scores) if flat_scores else None,
    }
