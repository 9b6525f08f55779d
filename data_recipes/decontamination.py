"""N-gram decontamination: find training prompts that overlap a manifest's eval sets.

Text is lower-cased and split into words (runs of letters and digits: LaTeX punctuation such as
`$a$, $b$, $c$` would otherwise make unrelated problems share n-grams); a training prompt is
contaminated when it shares any n-gram of words with an eval prompt. A prompt shorter than n words
is compared whole instead, symbols included and whitespace ignored, so short problems match exactly
(`17 -2 +2` is not `17 +2 -2`) rather than never. n = 13 is the GPT-3 / Llama default for
this check; on math sets it catches verbatim copies (MATH-500 inside MATH's test split) and
near-verbatim rewordings, not paraphrases.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

WORD = re.compile(r"[a-z0-9]+")


def prompt_text(prompt: Any) -> str:
    """A prompt as plain text, whether it is a string or a list of chat messages."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(message.get("content", "") for message in prompt)


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    if len(words) < n:
        whole = "".join(text.lower().split())
        return {(whole,)} if whole else set()
    return {tuple(words[index : index + n]) for index in range(len(words) - n + 1)}


def contaminated_rows(train_prompts: Iterable[Any], eval_prompts: Iterable[Any], n: int = 13) -> list[int]:
    """Indices of the training prompts that share an n-gram with any eval prompt."""
    eval_grams: set[tuple[str, ...]] = set()
    for prompt in eval_prompts:
        eval_grams |= ngrams(prompt_text(prompt), n)
    return [index for index, prompt in enumerate(train_prompts) if ngrams(prompt_text(prompt), n) & eval_grams]
