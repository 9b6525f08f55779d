r"""Rewards on the shape of a completion rather than its correctness: `format`, `length`, `repetition`.

Each is a class whose constructor's arguments are the manifest options and whose instances are TRL
reward functions; none needs a dataset column.
"""

from collections.abc import Sequence

from rewards.completions import completion_text

BOXED = "\\boxed{"


class AnswerFormat:
    r"""`format`: 1.0 when the answer is where the accuracy reward looks for it, else 0.0.

    Args:
        boxed: require a \boxed{...} whose braces balance and whose content is not blank. Only the last
            \boxed{ is checked, as it is the one `math_accuracy` reads: a completion cut off inside its
            final box fails even if an earlier box closed. `\boxed 5`, legal LaTeX, does not count.
        tags: tag names, e.g. ["think", "answer"]; each must appear exactly once as <tag>...</tag>
            around non-blank text, in this order. A single name may be given as a string.
    Both conditions must hold; \boxed{} may be anywhere, inside the tags or not.
    """

    __name__ = "format"

    def __init__(self, boxed: bool = True, tags: Sequence[str] | str = ()) -> None:
        self.boxed = boxed
        self.tags = (tags,) if isinstance(tags, str) else tuple(tags)
        if not boxed and not self.tags:
            raise ValueError("format checks nothing with boxed=False and no tags")
        for tag in self.tags:
            if not tag or "<" in tag or ">" in tag:
                raise ValueError(f"a tag is a bare name like 'answer', got {tag!r}")

    def __call__(self, prompts: list, completions: list, **kwargs: object) -> list[float]:
        return [1.0 if self.is_well_formed(completion_text(completion)) else 0.0 for completion in completions]

    def is_well_formed(self, text: str) -> bool:
        return (not self.boxed or last_box_is_closed(text)) and has_tags_in_order(text, self.tags)


def last_box_is_closed(text: str) -> bool:
    """Whether the last \\boxed{ has a matching close brace and non-blank content; one linear scan."""
    start = text.rfind(BOXED)
    if start < 0:
        return False
    content_start = start + len(BOXED)
    depth = 1
    for position in range(content_start, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return bool(text[content_start:position].strip())
    return False


def has_tags_in_order(text: str, tags: Sequence[str]) -> bool:
    """Whether each tag appears exactly once as <tag>...</tag> around non-blank text, in the given order."""
    position = 0
    for tag in tags:
        opening, closing = f"<{tag}>", f"</{tag}>"
        if text.count(opening) != 1 or text.count(closing) != 1:
            return False
        start, end = text.find(opening), text.find(closing)
        if start < position or end < start or not text[start + len(opening) : end].strip():
            return False
        position = end + len(closing)
    return True


class OverlongPenalty:
    r"""`length` (alias `overlong`): DAPO's soft overlong punishment (Yu et al. 2025, eq. 13).

    With L = max_tokens and C = cache_tokens, a completion of n tokens scores 0 for n <= L - C, then
    (L - C - n) / C, falling linearly to -1 at n = L, and -1 beyond. It never rewards brevity.

    Token counts come from TRL's `completion_ids`. Called without them (outside a trainer), it estimates
    n as len(text) / 4, the usual characters-per-token rule of thumb for English: an estimate, so set
    the bounds with some slack when scoring offline.

    Args:
        max_tokens: L, normally GRPOConfig.max_completion_length.
        cache_tokens: C, the soft band below L. Defaults to a fifth of L, DAPO's ratio (4,096 of 20,480).
            0 makes the penalty a cliff at L.
    """

    __name__ = "length"
    CHARS_PER_TOKEN = 4

    def __init__(self, max_tokens: int, cache_tokens: int | None = None) -> None:
        cache_tokens = max_tokens // 5 if cache_tokens is None else cache_tokens
        if max_tokens < 1 or not 0 <= cache_tokens <= max_tokens:
            raise ValueError(f"need max_tokens >= 1 and 0 <= cache_tokens <= max_tokens, got {max_tokens}, {cache_tokens}")
        self.max_tokens = max_tokens
        self.cache_tokens = cache_tokens

    def __call__(
        self, prompts: list, completions: list, completion_ids: list[list[int]] | None = None, **kwargs: object
    ) -> list[float]:
        if completion_ids is None:
            lengths = [-(-len(completion_text(completion)) // self.CHARS_PER_TOKEN) for completion in completions]
        else:
            lengths = [len(ids) for ids in completion_ids]
        return [self.penalty(length) for length in lengths]

    def penalty(self, length: int) -> float:
        soft_start = self.max_tokens - self.cache_tokens
        if length <= soft_start:
            return 0.0
        if length <= self.max_tokens:
            return (soft_start - length) / self.cache_tokens
        return -1.0


class RepetitionPenalty:
    """`repetition`: penalise repeated word n-grams (Yeo et al. 2025, "Demystifying Long CoT", App. C.2).

    Follows open-r1's get_repetition_penalty_reward: words are the lower-cased, whitespace-split text; a
    completion with fewer than `ngram_size` words scores 0; otherwise the score is
    (1 - distinct n-grams / all n-grams) * max_penalty, so 0 without repetition and near `max_penalty`
    for a loop. (TRL's version counts token-id n-grams instead; word n-grams need no tokenizer.)

    Args:
        ngram_size: words per n-gram.
        max_penalty: the score of a fully repetitive completion; must be <= 0.
    """

    __name__ = "repetition"

    def __init__(self, ngram_size: int = 3, max_penalty: float = -1.0) -> None:
        if ngram_size < 1:
            raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
        if max_penalty > 0:
            raise ValueError(f"max_penalty must be <= 0, got {max_penalty}")
        self.ngram_size = ngram_size
        self.max_penalty = max_penalty

    def __call__(self, prompts: list, completions: list, **kwargs: object) -> list[float]:
        return [self.penalty(completion_text(completion)) for completion in completions]

    def penalty(self, text: str) -> float:
        words = text.lower().split()
        if len(words) < self.ngram_size:
            return 0.0
        ngrams = list(zip(*(words[offset:] for offset in range(self.ngram_size))))
        return (1 - len(set(ngrams)) / len(ngrams)) * self.max_penalty
