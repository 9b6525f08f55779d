"""N-gram decontamination: find training problems that overlap a manifest's eval sets.

What is compared is each row's *problem*, never its rendering: a template's fixed words or a shared
system prompt would otherwise match every row of one set against every row of another (MATH's default
template alone is 12 words, so any two problems ending in the same word shared a 13-gram). A row's
problem is, in order (`problem_texts`):
  1. its `problem` column (the math sets and the PRM formats have one);
  2. else the last user message of a conversational `prompt` (system prompts left out);
  3. else its plain-text `prompt`;
  4. else the last user message of `messages` (SFT chat data).
Texts read from 2-4 may still carry a template. When a set has at least `MIN_TEXTS_TO_FIND_A_TEMPLATE`
distinct texts, the words *every one* of them begins or ends with are taken for the template's fixed text
and stripped (`strip_shared_affixes`): among that many distinct problems, a coincidental shared first or
last word is rare, and costs at most the n-grams of that word. A set that mixes templates keeps them; the
cap on the share a removal may drop (`decontamination.max_removed_fraction`) then refuses a mass removal.

Text is lower-cased and split into words (runs of letters and digits: LaTeX punctuation such as
`$a$, $b$, $c$` would otherwise make unrelated problems share n-grams); a training problem is
contaminated when it shares any n-gram of words with an eval problem. A problem shorter than n words
is compared whole instead, symbols included and whitespace ignored, so short problems match exactly
(`17 -2 +2` is not `17 +2 -2`) rather than never; a templated text is also compared whole as it was
read, so an exact copy is found even when only one side's template could be stripped. n = 13 is the
GPT-3 / Llama default for this check; on math sets it catches verbatim copies (MATH-500 inside MATH's
test split) and near-verbatim rewordings, not paraphrases.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import data_recipes
from data_recipes import math_sets, prm_formats, synthetic

if TYPE_CHECKING:
    import datasets

WORD = re.compile(r"[a-z0-9]+")
# Fewer distinct texts than this cannot tell a template's fixed words from problems that begin alike.
MIN_TEXTS_TO_FIND_A_TEMPLATE = 20
# Options that change how a recipe shows its problems, never which problems or their text as read above.
PRESENTATION_OPTIONS: dict[str, frozenset[str]] = {
    **{recipe.name: frozenset({"template", "system_prompt", "chat"}) for recipe in math_sets.RECIPES},
    **{recipe.name: frozenset({"template"}) for recipe in prm_formats.RECIPES},
    synthetic.RECIPE.name: frozenset({"format"}),  # the same "Q: ...\nA:" text, as a prompt or a user message
}

Key = tuple[str, ...]


def problem_texts(dataset: "datasets.Dataset") -> tuple[list[str], str]:
    """Each row's problem as the check compares it, and the column it was read from (module docstring)."""
    columns = dataset.column_names
    if "problem" in columns:
        return [str(problem) for problem in dataset["problem"]], "problem"
    if "prompt" in columns:
        return [prompt if isinstance(prompt, str) else last_user_message(prompt) for prompt in dataset["prompt"]], "prompt"
    return [last_user_message(messages) for messages in dataset["messages"]], "messages"


def last_user_message(messages: list[dict[str, Any]]) -> str:
    """The content of the last user turn (the problem of a single-turn chat), or "" when there is none."""
    return next((message.get("content") or "" for message in reversed(messages) if message.get("role") == "user"), "")


def strip_shared_affixes(texts: Sequence[str]) -> list[str]:
    """The texts without the words every one of them begins or ends with (a template's fixed text), when
    there are enough distinct texts to tell; otherwise unchanged. No text is stripped to nothing."""
    distinct = [text.split() for text in dict.fromkeys(texts)]
    if len(distinct) < MIN_TEXTS_TO_FIND_A_TEMPLATE:
        return list(texts)
    shortest = min(len(words) for words in distinct) - 1  # at least one word of every text stays
    prefix = 0
    while prefix < shortest and all(words[prefix] == distinct[0][prefix] for words in distinct):
        prefix += 1
    suffix = 0
    while prefix + suffix < shortest and all(words[-1 - suffix] == distinct[0][-1 - suffix] for words in distinct):
        suffix += 1
    return [" ".join(words[prefix : len(words) - suffix]) for words in (text.split() for text in texts)]


def ngrams(text: str, n: int) -> set[Key]:
    """The n-grams of a text's words, or the text whole (whitespace ignored) when it has fewer than n words."""
    words = WORD.findall(text.lower())
    if len(words) < n:
        return {(whole,)} if (whole := _whole(text)) else set()
    return {tuple(words[index : index + n]) for index in range(len(words) - n + 1)}


def _whole(text: str) -> str:
    return "".join(text.lower().split())


def problem_keys(texts: Sequence[str], n: int, read_from: str = "problem") -> list[set[Key]]:
    """What the check compares of each problem of one set: its n-grams. A set read from prompts or messages
    (`problem_texts`) may be templated: it is stripped of its template first, and each text is also compared
    whole as it was read."""
    if read_from == "problem":
        return [ngrams(text, n) for text in texts]
    return [ngrams(stripped, n) | ({(_whole(text),)} if text.strip() else set())
            for text, stripped in zip(texts, strip_shared_affixes(texts))]


def contaminated_rows(train_keys: Sequence[set[Key]], eval_keys: Sequence[set[Key]]) -> list[int]:
    """Indices of the training problems that share a key (`problem_keys`) with any eval problem."""
    eval_grams: set[Key] = set().union(*eval_keys)
    return [index for index, keys in enumerate(train_keys) if keys & eval_grams]


def decontamination_identity(recipe: str, options: dict[str, Any], fingerprints: Mapping[str, str]) -> dict[str, Any]:
    """What the check reads of one eval set, for the fingerprints of the training stages it decontaminates.

    A recipe's presentation options (template, system prompt, chat rendering) are left out where the
    problem text does not depend on them, so editing them reruns no training stage. A mixture keeps its
    components' options unless every component has a `problem` column (otherwise its prompts are read).
    A set read from an earlier stage's output (`stage_output`, `accepted_samples`) is its producer's
    fingerprint (from `fingerprints`, the earlier stages' by name): the set changes exactly when the producer reruns.
    """
    reading = data_recipes.stage_input(recipe)
    if reading is not None:
        return reading.identity(options["stage"], fingerprints[options["stage"]])
    return data_recipes.identity(recipe, _without_presentation(recipe, options))


def _without_presentation(recipe: str, options: dict[str, Any]) -> dict[str, Any]:
    if recipe == "mixture":
        if "problem" not in data_recipes.columns(recipe, options):
            return options
        components = [{"recipe": component["recipe"], **_without_presentation(component["recipe"], _options_of(component))}
                      for component in options["components"]]
        return {**options, "components": components}
    dropped = PRESENTATION_OPTIONS.get(recipe, frozenset())
    return {key: value for key, value in options.items() if key not in dropped}


def _options_of(component: dict[str, Any]) -> dict[str, Any]:
    """A mixture component's recipe options and weight (everything but its recipe name)."""
    return {key: value for key, value in component.items() if key != "recipe"}


@dataclasses.dataclass(frozen=True)
class Overlap:
    """What the check found in a training set: the overlapping rows, the report a stage writes
    (`decontamination.json`), and whether removing them was refused (more than `max_removed_fraction`
    of the rows: so large an overlap means the check compared the wrong text, or the eval sets are the
    training data, and training on what is left would hide that)."""

    rows: list[int]
    report: dict[str, Any]
    refused: bool
    max_removed_fraction: float

    def refusal(self, report_path: Any) -> str:
        """Why the stage stops, naming the counts and where the examples are."""
        train_rows = self.report["train_rows"]
        share = len(self.rows) / train_rows if train_rows else 0.0
        return (
            f"decontamination would remove {len(self.rows)} of {train_rows} training rows ({share:.1%}), more than "
            f"decontamination.max_removed_fraction {self.max_removed_fraction} (examples in {report_path}); if the overlap is real, "
            "raise max_removed_fraction in the manifest's decontamination block, or set remove: false to keep the rows"
        )

    def kept(self, dataset: "datasets.Dataset") -> "datasets.Dataset":
        """The training set without the overlapping rows when they are removed; unchanged otherwise."""
        if not (self.rows and self.report["removed"]):
            return dataset
        dropped = set(self.rows)
        return dataset.select([index for index in range(len(dataset)) if index not in dropped])


def find_overlap(dataset: "datasets.Dataset", eval_sets: Iterable["datasets.Dataset"], ngram: int, remove: bool,
                 max_removed_fraction: float) -> Overlap:
    """The training problems of `dataset` that share an n-gram with any problem of `eval_sets` (read one at a
    time, so only their keys are held), compared as the module docstring says."""
    train_texts, train_read_from = problem_texts(dataset)
    eval_keys: list[set[Key]] = []
    eval_read_from: list[str] = []
    for eval_set in eval_sets:
        texts, read_from = problem_texts(eval_set)
        eval_keys += problem_keys(texts, ngram, read_from)
        eval_read_from.append(read_from)
    overlapping = contaminated_rows(problem_keys(train_texts, ngram, train_read_from), eval_keys)
    share = len(overlapping) / len(dataset) if len(dataset) else 0.0
    refused = remove and share > max_removed_fraction
    report = {
        "ngram": ngram, "compared": {"train": train_read_from, "eval": eval_read_from}, "eval_problems": len(eval_keys),
        "train_rows": len(dataset), "overlapping_rows": len(overlapping), "removed": remove and not refused,
        "examples": [train_texts[index][:200] for index in overlapping[:5]],
    }
    return Overlap(overlapping, report, refused, max_removed_fraction)
