"""`difficulty` stage: each prompt's pass rate for a model, measured offline, before any training on it.

The stage samples `num_samples` (k) completions per prompt of its `data` from its `model`, scores each
with the stage's `rewards` (their weighted sum, as on-policy DPO ranks completions: a None counts 0),
and writes the pool back as `<stage>/dataset` with two columns more:

    pass_rate   the fraction of the k completions whose score reaches `pass_threshold`
    scores      the k scores
    samples     the k completions (texts), so expert iteration (`accepted_samples`) can train on those accepted
                (not `completions`: GRPO hands data columns to rewards by name, and that one is theirs)

Optionally only prompts whose pass rate lies inside `keep_pass_rate` are kept (open-r1's offline
0.2-0.8 filter: prompts the model always or never solves give GRPO groups with zero advantage). A later
stage reads the dataset as `data: {recipe: stage_output, stage: NAME}`; a curriculum can put prompts in
buckets by `pass_rate` (`difficulty_column: pass_rate`) and start from it (`prior_column: pass_rate`).

Cost: k completions per prompt, counted in `metrics.json` (`completions`), so a benchmark can charge
them to the strategy that uses the estimate. The estimate serves every epoch and every later stage on
the same pool and model.

Resumable and multi-process exactly as `prm_label` (the shard helpers are `stages/common.py`'s): the
prompts are cut into shards of `prompts_per_shard`, each process estimates its share of the shards,
each finished shard is written atomically and skipped by a rerun, and each shard is seeded by its
number, so a resumed or re-split stage samples what an uninterrupted single process would (on CPU).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rewards.weighted import weighted_scores
from stages import common
from stages.arguments import DifficultyArgs, StageFile
from stages.common import Sampler

log = logging.getLogger("gradus")

def pass_rates(scores: list[float], k: int, threshold: float) -> list[float]:
    """The fraction of each prompt's k consecutive scores that reach `threshold`."""
    return [sum(score >= threshold for score in scores[start : start + k]) / k for start in range(0, len(scores), k)]


def estimate_shard(
    rows: Any, sample: Sampler, tokenizer: Any, reward_fns: list[tuple[str, float, Callable]], args: DifficultyArgs,
) -> dict[str, list]:
    """Sample k completions of each row's prompt and score them: per row its pass rate, k scores and k completions.

    The rewards get what on-policy DPO gives them (`rewards.weighted.weighted_scores`): prompts, completions, the
    completions' token ids and every data column, repeated for the k completions of each prompt."""
    k = args.num_samples
    prompts = list(rows["prompt"])
    texts = sample(prompts, k)
    conversational = not isinstance(prompts[0], str)
    completions = [[{"role": "assistant", "content": text}] for text in texts] if conversational else texts
    completion_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    scores, _ = weighted_scores(reward_fns, rows, completions, completion_ids, k)
    per_prompt = range(0, len(scores), k)
    return {"pass_rate": pass_rates(scores, k, args.pass_threshold), "scores": [scores[start : start + k] for start in per_prompt],
            "samples": [texts[start : start + k] for start in per_prompt]}


def summary(pass_rate: list[float], levels: list[Any] | None) -> dict[str, Any]:
    """How the pool's pass rates spread: the share at 0, at 1 and strictly between, and the mean per level."""
    count = len(pass_rate)
    figures: dict[str, Any] = {
        "mean_pass_rate": sum(pass_rate) / count,
        "share_never_solved": sum(rate == 0 for rate in pass_rate) / count,
        "share_always_solved": sum(rate == 1 for rate in pass_rate) / count,
    }
    figures["share_learnable"] = 1 - figures["share_never_solved"] - figures["share_always_solved"]
    if levels is not None:
        by_level: dict[str, list[float]] = {}
        for level, rate in zip(levels, pass_rate, strict=True):
            by_level.setdefault(str(level), []).append(rate)
        figures["mean_pass_rate_by_level"] = {level: sum(rates) / len(rates) for level, rates in sorted(by_level.items())}
    return figures


def kept(pass_rate: list[float], keep: list[float] | None) -> list[int]:
    """Rows whose pass rate lies inside `keep` (inclusive, with float slack); all rows if None."""
    if keep is None:
        return list(range(len(pass_rate)))
    low, high = keep
    return [index for index, rate in enumerate(pass_rate) if low - 1e-9 <= rate <= high + 1e-9]


def run(stage: StageFile) -> None:
    from accelerate.utils import gather_object
    from transformers import AutoModelForCausalLM, set_seed

    import rewards

    started, args = time.time(), DifficultyArgs(**stage.args)
    dataset = common.load_data(stage.data)
    pool = dataset.select(range(len(dataset) if args.max_prompts is None else min(args.max_prompts, len(dataset))))
    shard_rows = [list(range(begin, min(begin + args.prompts_per_shard, len(pool)))) for begin in range(0, len(pool), args.prompts_per_shard)]
    num_shards, state = len(shard_rows), common.distributed_state()
    todo, resumed_here = common.unfinished_shards(stage, num_shards, state)
    resumed = sum(gather_object([resumed_here]))
    if todo:
        model = AutoModelForCausalLM.from_pretrained(stage.model_path).to(state.device).eval()
        tokenizer = common.load_tokenizer(stage.model_path)
        sample = common.policy_sampler(model, tokenizer, args)
        reward_fns = [(spec.name, spec.weight, rewards.build(spec.name, spec.options)) for spec in stage.rewards]
        for number, shard in enumerate(todo, start=1):
            shard_started, indices = time.time(), shard_rows[shard]
            set_seed((stage.seed if args.seed is None else args.seed) + shard)  # a resumed or re-split stage samples what an uninterrupted one would
            estimate = estimate_shard(pool.select(indices), sample, tokenizer, reward_fns, args)
            common.write_shard(stage, shard, {"indices": indices, **estimate, "seconds": round(time.time() - shard_started, 2)})
            log.info("shard %d (%d of %d here): %d prompts, mean pass rate %.3f", shard, number, len(todo), len(indices),
                     sum(estimate["pass_rate"]) / len(indices))
    state.wait_for_everyone()

    if not state.is_main_process:
        common.finish(stage, {})
        return
    shards = common.all_finished_shards(stage, num_shards)
    pass_rate = [rate for payload in shards for rate in payload["pass_rate"]]
    scores = [row for payload in shards for row in payload["scores"]]
    samples = [row for payload in shards for row in payload["samples"]]
    keep = kept(pass_rate, args.keep_pass_rate)
    if not keep:
        raise RuntimeError(f"difficulty: no prompt's pass rate lies inside keep_pass_rate {args.keep_pass_rate}")
    rows = [{**pool[index], "pass_rate": pass_rate[index], "scores": scores[index], "samples": samples[index]} for index in keep]
    common.save_dataset(rows, stage.stage_dir / common.DATASET_DIR)
    metrics = {
        "prompts": len(pool),
        "kept": len(keep),
        "num_samples": args.num_samples,
        "completions": len(pool) * args.num_samples,
        **summary(pass_rate, list(pool["level"]) if "level" in pool.column_names else None),
        "shards": num_shards,
        "shards_resumed": resumed,
        "sampling_seconds": round(sum(payload["seconds"] for payload in shards), 1),
        "seconds": round(time.time() - started, 1),
        "num_processes": state.num_processes,
    }
    log.info("%d prompts: %.0f%% never solved, %.0f%% always, %d kept", len(pool), 100 * metrics["share_never_solved"],
             100 * metrics["share_always_solved"], len(keep))
    common.finish(stage, metrics)


if __name__ == "__main__":
    run(common.start())
