r"""Rewards on the shape of a completion rather than its correctness: `format`, `length`, `repetition`.

Each is a class whose constructor's arguments are the manifest options and whose instances are TRL
reward functions; none needs a dataset column.
"""

from collections.abc import Sequence

from rewards.answer_text import final_box
from rewards.completions import completion_text


class AnswerFormat:
    r"""`format`: 1.0 when the completion is laid out as asked, else 0.0.

    Args:
        boxed: require a final \boxed{...} that closes and is not blank: the answer `math_accuracy`
            reads (`rewards.answer_text.final_box`), so a completion cut off inside its last box fails
            even if an earlier box closed, and `\boxed 5`, legal LaTeX, does not count. With a reasoning
            block among `tags`, the box must come after the block.
        tags: tag names, e.g. ["think", "answer"]; each must appear exactly once as <tag>...</tag>, in
            this order, around non-blank text. A single name may be given as a string.
        reasoning_tag: the tag that holds the reasoning. When it is among `tags` it must come first,
            and it behaves like TRL's `think_format_reward`: `<think>` opens the completion (nothing
            before it, not even a space) and `</think>` closes it, with no second `<think>`.
        empty_reasoning: whether that reasoning block may be empty or blank.

    Where gradus deliberately differs from TRL's `think_format_reward` (which is
    `AnswerFormat(boxed=False, tags=["think"], empty_reasoning=True)` but for the last two points):
      * an empty reasoning block fails by default (`empty_reasoning=False`): it is the cheapest way
        to collect a format reward (`<think></think>a` scores 1.0 with TRL's pattern `(.*?)`);
      * a second `</think>` fails, as any tag appearing twice does (TRL's pattern accepts anything
        after the first closing tag, so several reasoning blocks pass: open-r1#418 saw policies emit them);
      * the completion's text is its last assistant message, not the first message's `content`.
    A chat template that writes `<think>` into the prompt leaves the completion without its opening
    tag; such completions fail here, as with TRL.
    """

    __name__ = "format"

    def __init__(
        self, boxed: bool = True, tags: Sequence[str] | str = (), reasoning_tag: str = "think", empty_reasoning: bool = False
    ) -> None:
        self.boxed = boxed
        self.tags = (tags,) if isinstance(tags, str) else tuple(tags)
        self.reasoning_tag = reasoning_tag
        self.empty_reasoning = empty_reasoning
        if not boxed and not self.tags:
            raise ValueError("format checks nothing with boxed=False and no tags")
        for tag in (*self.tags, reasoning_tag):
            if not isinstance(tag, str) or not tag or "<" in tag or ">" in tag:
                raise ValueError(f"a tag is a bare name like 'answer', got {tag!r}")
        if reasoning_tag in self.tags[1:]:
            raise ValueError(f"the reasoning tag {reasoning_tag!r} must come first in tags, got {list(self.tags)}")

    def __call__(self, prompts: list, completions: list, **kwargs: object) -> list[float]:
        return [1.0 if self.is_well_formed(completion_text(completion)) else 0.0 for completion in completions]

    def is_well_formed(self, text: str) -> bool:
        if not self._has_blocks(text):
            return False
        if not self.boxed:
            return True
        closing = f"</{self.reasoning_tag}>"
        answer_start = text.find(closing) + len(closing) if self.tags[:1] == (self.reasoning_tag,) else 0
        return final_box(text[answer_start:]) is not None

    def _has_blocks(self, text: str) -> bool:
        """Whether each tag appears exactly once as a block, in order, in sequence, the reasoning first."""
        position = 0
        for index, tag in enumerate(self.tags):
            opening, closing = f"<{tag}>", f"</{tag}>"
            if text.count(opening) != 1 or text.count(closing) != 1:
                return False
            start, end = text.find(opening), text.find(closing)
            if start < position or end < start:
                return False
            reasoning = index == 0 and tag == self.reasoning_tag
            if reasoning and start != 0:
                return False  # as TRL's think_format_reward: the reasoning opens the completion
            if not text[start + len(opening) : end].strip() and not (reasoning and self.empty_reasoning):
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
