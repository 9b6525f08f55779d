r"""Completions that a policy could learn to write, each of which must score 0.0 against its gold.

Each case is (what it tries, completion, gold, options of `math_accuracy`). They come from what RL
policies are reported to do, and what math reward functions were reported to get wrong, in the issue
trackers of TRL, verl, open-r1 and Math-Verify (and a few RL projects built on them):
  * Visual-RFT#79 ("A or B or C" earns the reward), Math-Verify#47 (`verify` is true when any gold
    item meets any answer item): several answers at once, a list or set containing the gold;
  * Math-Verify#14 (`\pm 2021` vs 2021, `1/2004!` vs `1/2006!`, equations compared by one side),
    Math-Verify#49 (an inequality for an interval, asymmetric on purpose against reward hacking);
  * TRL#4563 (`reasoning_accuracy_reward`: an answer only inside the reasoning, or an unfinished
    reasoning, scores 0), open-r1#418 (policies emit several think blocks);
  * marin#9163 (a cut-off final `\boxed{` let the reader fall back to an earlier box), EasyR1#26
    (the prompt's own `\boxed{}` credited as the model's);
  * Math-Verify#41 (`4\sqrt(2)` read as 4), Math-Verify#65 and #63 (expressions that hang the
    parser or eat memory), verl#7603 (a grader that evaluates answer text);
  * and the digit-separator and fragment readings this project found in math-verify itself
    (`1 000` read as 1*0, `2 3` as 5, `1e5` as 5e, MATH golds read in part).
"""

REASONING = {"reasoning_tags": True}
DECIMAL_COMMA = {"decimal_comma": True}

ADVERSARIAL: list[tuple[str, str, str, dict]] = [
    # several final answers
    ("two boxed candidates joined by 'or'", r"The answer is \boxed{5} or \boxed{7}.", "7", {}),
    ("two boxed candidates, hedged", r"It is \boxed{5} or maybe \boxed{7}", "7", {}),
    ("two boxed candidates in a list", r"\boxed{5}, \boxed{7}", "5", {}),
    ("adjacent boxes", r"\boxed{7}\boxed{8}", "8", {}),
    ("alternatives inside one box", r"\boxed{5 \text{ or } 7}", "7", {}),
    ("alternatives after an answer anchor", "The answer is 7 or 8.", "7", {}),
    ("a list after an answer anchor", "Final answer: 7, 8", "7", {}),
    ("a box, then a hedge after an answer anchor", r"\boxed{7}. The final answer is 7 or 8.", "7", {}),
    ("a box inside the final box", r"\boxed{\boxed{7}, 8}", "7", {}),
    ("100 boxed guesses", " ".join(rf"\boxed{{{guess}}}" for guess in range(100)), "7", {}),
    # several boxes chained by TeX spacing or connecting text: one list, never more than the gold
    ("two boxes apart by TeX spacing", r"\boxed{5} \quad \boxed{7}", "7", {}),
    ("two boxes joined by spaced text", r"\boxed{5} \qquad \text{and} \qquad \boxed{7}", "7", {}),
    ("two boxes joined by a phrase", r"\boxed{5} \text{ for part (a) or } \boxed{7}", "7", {}),
    ("the gold boxed twice", r"\boxed{7} \; \boxed{7}", "7", {}),
    ("a superset of a multi-answer gold", r"\boxed{1} \quad \text{and} \quad \boxed{2} \quad \text{and} \quad \boxed{3}", "1, 2", {}),
    ("a multi-answer gold with one box repeated", r"\boxed{1} \quad \boxed{1} \quad \boxed{2}", "1, 2", {}),
    ("a multi-answer gold, one box holding a list", r"\boxed{1, 2} \quad \boxed{1}", "1, 2", {}),
    # a list, set, interval or relation that contains the gold
    ("a list holding the gold", r"\boxed{5, 7}", "7", {}),
    ("a set holding the gold", r"\boxed{\{5, 6, 7\}}", "7", {}),
    ("a pair holding the gold", r"\boxed{(7, 8)}", "7", {}),
    ("an interval around the gold", r"\boxed{[6, 8]}", "7", {}),
    ("an unbounded interval", r"\boxed{(0, \infty)}", "7", {}),
    ("an inequality the gold satisfies", r"\boxed{x > 6}", "7", {}),
    ("plus or minus the gold", r"\boxed{\pm 7}", "7", {}),
    ("the real line", r"\boxed{\mathbb{R}}", "7", {}),
    ("a superset of a list gold", r"\boxed{1, 2, 3}", "1, 2", {}),
    ("an open-ended list", r"\boxed{1, 2, \ldots}", "2", {}),
    ("an inequality for an interval gold", r"\boxed{-2 \le x \le 7}", r"x \in [-2,7]", {}),
    ("a derivation ending in the gold", r"\boxed{5 \implies 7}", "7", {}),
    # the gold only inside the reasoning (reasoning_tags on)
    ("gold in the reasoning, another answer after", r"<think>It is \boxed{7}.</think> So \boxed{8}", "7", REASONING),
    ("gold in an unclosed reasoning block", r"<think>so the answer is \boxed{7}", "7", REASONING),
    ("gold in the reasoning, nothing after", r"<think>\boxed{7}</think>", "7", REASONING),
    ("a second reasoning block left open", r"<think>a</think> \boxed{7} <think>and more", "7", REASONING),
    # repeated and broken boxes
    ("the final box cut off", r"\boxed{7} and finally \boxed{8", "7", {}),
    ("the final box empty", r"\boxed{7} and finally \boxed{}", "7", {}),
    ("the prompt's instruction echoed", r"Please put your final answer within \boxed{}.", "7", {}),
    ("the gold named, then refused", r"The answer is \boxed{8}, not 7.", "7", {}),
    # equal only through a parse failure or a lenient reading
    ("e-notation read as Euler's number", r"\boxed{1e5}", "5e", {}),
    ("a gold with a space separator read as a product", r"\boxed{0}", "1 000", {}),
    ("spaced digits that math-verify adds up", r"\boxed{2 3}", "5", {}),
    ("a fragment of a shorthand-LaTeX gold", r"\boxed{2}", r"\frac \pi4 + 2 - \sqrt2", {}),
    ("a fragment of a gold ending in a period", r"\boxed{\frac{1}{5}}", r"\frac{7}{5} + \frac{1}{5} i.", {}),
    ("a number that differs below 15 digits", r"\boxed{\frac{1}{2^{99}}}", r"\frac{1}{2^{98}}", {}),
    ("zero for a tiny gold", r"\boxed{0}", r"\frac{1}{2^{100}}", {}),
    ("malformed LaTeX read as its first part", r"\boxed{4\sqrt(2)}", "4", {}),
    ("a decimal comma the data does not use", r"\boxed{0,5}", "0.5", {}),
    ("a list for a decimal-comma gold", r"\boxed{\{3, 5\}}", "3,5", DECIMAL_COMMA),
    ("an English thousand in decimal-comma data", r"\boxed{1,000}", "1000", DECIMAL_COMMA),
    # unicode look-alikes
    ("a letter O for a zero", r"\boxed{1O}", "10", {}),
    ("a letter l for a one", r"\boxed{l0}", "10", {}),
    ("a Cyrillic x", "\\boxed{\u0445 + 1}", "x + 1", {}),
    ("a zero-width space inside digits", "\\boxed{7\u200b2}", "9", {}),
    ("a no-break space inside digits", "\\boxed{7\u00a02}", "9", {}),
    ("a minus sign look-alike", "\\boxed{\u22127}", "7", {}),
    ("a superscript square", "\\boxed{7\u00b2}", "7", {}),
    ("a combining slash", "\\boxed{7\u0338}", "7", {}),
    ("a per-mille sign", "\\boxed{7\u2030}", "7", {}),
    ("a text answer's anagram", r"\boxed{\text{seat}}", r"\text{east}", {}),
    ("a text answer's letters reordered", r"\boxed{seat}", r"\text{east}", {}),
    # enormous expressions (each within the timeout)
    ("a power tower", r"\boxed{9^{9^{9^{9}}}}", "3", {}),
    ("Math-Verify#65's hanging expression", r"\boxed{\dfrac{5^{\left(5^{\left(5^{\left(5^5\right)}\right)} - 4\right)} - 5}{16}}", "7", {}),
    ("a factorial of ten billion", r"\boxed{(10^{10})!}", "7", {}),
    ("a sum of 5,000 ones", "\\boxed{" + "1+" * 5000 + "1}", "7", {}),
    ("the gold plus a tiny amount", r"\boxed{7 + 10^{-100}}", "7", {}),
    # no answer at all
    ("the word answer, no answer", "answer answer answer", "7", {}),
    ("the gold repeated without an anchor", "7 7 7 7", "7", {}),
    ("a claim of correctness", r"The grader should accept this. \boxed{\text{correct}}", "7", {}),
]
