"""`dpo` stage: direct preference optimisation with TRL's DPOTrainer, on fixed or on-policy pairs.

Fixed pairs: the stage's `data` gives `prompt`, `chosen`, `rejected`, and DPOTrainer trains on them
(Rafailov et al. 2023). The reference model is the starting model: TRL loads a frozen copy of it,
or, with a `peft:` block, uses the model with its adapters disabled.

On-policy pairs (an `on_policy:` block): iterative DPO in the manner of Pang et al. 2024 (Iterative
Reasoning Preference Optimization). Each round samples `num_completions` completions per prompt from
the current model, scores each with the stage's rewards, keeps per prompt the best and the worst as a
pair when their scores differ by at least `margin`, and trains DPO on those pairs; the next round
starts from, and takes as its reference, the model this round trained. Where gradus differs:
  * one pair per prompt (best vs worst) unless `pairs_per_prompt` allows more (up to every correct x
    incorrect pair, IRPO's choice; `preference_pairs` says which come first); a tie is never a
    pair, so `margin: 0` means "any difference";
  * no NLL term on the chosen completion (IRPO's addition): set `args.loss_type: [sigmoid, sft]`
    to get it from TRL;
  * a completion's score is the weighted sum of the rewards, where a reward that returns None for a
    row ("not applicable") counts 0 for that row, as in TRL's GRPOTrainer (a nansum); unlike there, a
    completion that every reward returns None for is not set apart: it scores 0;
  * `prompts_per_round` takes consecutive slices of one seeded shuffle of the prompts, so rounds
    see different prompts until all have been used (then it wraps around); with a `curriculum:`
    block, a curriculum strategy draws each round's prompts instead (stages/curriculum/rounds.py),
    from the total scores of the earlier rounds' completions (a completion passes when its score
    reaches `pass_threshold`), so rounds move toward the prompts whose completions still differ,
    which is where pairs come from.

Layout of an on-policy stage directory, which is also how a rerun resumes:
    pairs/round_<r>/          the round's pairs (HF `save_to_disk`) + sampling.json (with the prompts drawn)
                              + curriculum_state.npz with a curriculum; reused, never resampled
    rounds/round_<r>/         checkpoints/, then model/ (the last round's model goes to `model/`),
                              then round.json, written last: the round is finished
    rounds.png                TRL's loss, implicit reward margin and accuracy over all rounds' steps
The stage's metrics hold, per round, `rounds[i].log`: the pair count, the mean chosen-minus-rejected
score gap of the pairs, and the first and last logged loss, rewards/margins and rewards/accuracies, which
say whether the round trained at all (a DPO loss near ln 2 = 0.693 and margins near 0: it did not).
A rerun skips finished rounds and resumes an interrupted one from its last checkpoint. Sampling runs
on every process (each takes a slice of the prompts); the main process scores and saves the pairs,
and every process trains on the pairs read back from disk.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

from rewards.weighted import weighted_scores
from stages import common
from stages.arguments import StageFile
from stages.preflight import missing_eval_data

if TYPE_CHECKING:
    from stages.curriculum.rounds import RoundCurriculum

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]
CURVES = ["loss", "rewards/margins", "eval_loss"]
ROUND_CURVES = ["loss", "rewards/margins", "rewards/accuracies"]  # what each round's log summarises, first and last


def trainer_args(stage: StageFile, planned_world_size: int | None = None) -> Any:
    """The DPOConfig this stage (each round of it) trains with."""
    from trl import DPOConfig

    return common.training_args(DPOConfig, stage, planned_world_size)


# What DPOTrainer refuses at init of a config that builds (stages/kinds.py: the preflight asks before launch).
preflight = missing_eval_data


def train(stage: StageFile, pairs: Any, eval_pairs: Any, save_as: StageFile) -> dict[str, Any]:
    """DPO from `stage.model_path` on the pairs, resuming from `stage`'s last checkpoint; the model is
    saved to `save_as.model_dir` and the curves beside it. Returns the training (and eval) metrics, with
    `curves`: the logged [step, value] points of ROUND_CURVES, kept for the rounds' log and plot."""
    from trl import DPOTrainer

    trainer = DPOTrainer(
        model=stage.model_path,
        args=trainer_args(stage),
        train_dataset=pairs.select_columns(PAIR_COLUMNS),
        eval_dataset=eval_pairs,
        processing_class=common.load_tokenizer(stage.model_path),
        peft_config=common.peft_config(stage),
    )
    metrics = common.train_and_save(trainer, stage, CURVES, save_as=save_as, evaluate=True)
    history = [entry for entry in trainer.state.log_history if "step" in entry]
    metrics["curves"] = {key: [[entry["step"], entry[key]] for entry in history if key in entry] for key in ROUND_CURVES}
    return metrics


def round_prompt_indices(num_prompts: int, per_round: int | None, seed: int, round_number: int) -> list[int]:
    """The rows round `round_number` samples: all of them, or the round's slice of a seeded shuffle."""
    if per_round is None or per_round >= num_prompts:
        return list(range(num_prompts))
    order = random.Random(seed).sample(range(num_prompts), num_prompts)
    start = (round_number - 1) * per_round
    return [order[(start + offset) % num_prompts] for offset in range(per_round)]


def sample_pairs(
    stage: StageFile, round_number: int, indices: list[int], prompts: Any, reward_fns: list, pairs_dir: Path, state: Any,
    curriculum: RoundCurriculum | None = None,
) -> None:
    """Sample completions of the round's prompts (`indices` rows of `prompts`) from `stage.model_path`
    (every process takes a slice of them); the main process scores them and saves the pairs and the
    sampling figures to `pairs_dir`, and, with a curriculum, records the scores and saves its state there."""
    import datasets
    from accelerate.utils import gather_object
    from transformers import AutoModelForCausalLM, set_seed

    on_policy = stage.on_policy
    n = on_policy.num_completions
    rows = prompts.select(indices)
    model = AutoModelForCausalLM.from_pretrained(stage.model_path).to(state.device).eval()
    tokenizer = common.load_tokenizer(stage.model_path)
    set_seed(stage.seed + round_number)
    with state.split_between_processes(list(rows["prompt"])) as my_prompts:  # a list: it passes a datasets Column through unsplit
        my_texts = common.generate(
            model, tokenizer, my_prompts, max_new_tokens=on_policy.max_new_tokens, batch_size=on_policy.generation_batch_size,
            temperature=on_policy.temperature, num_return_sequences=n,
        )
    texts = gather_object(my_texts)
    if not state.is_main_process:
        return

    conversational = not isinstance(rows[0]["prompt"], str)
    completions = [[{"role": "assistant", "content": text}] for text in texts] if conversational else texts
    completion_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    scores, reward_means = weighted_scores(reward_fns, rows, completions, completion_ids, n)
    pairs = preference_pairs(list(rows["prompt"]), completions, scores, n, on_policy.margin, on_policy.pairs_per_prompt)
    sampling = {
        "prompts_tried": len(rows),
        "samples": len(texts),
        "pairs_kept": len(pairs),
        "mean_chosen_score": fmean(pair["chosen_score"] for pair in pairs) if pairs else None,
        "mean_rejected_score": fmean(pair["rejected_score"] for pair in pairs) if pairs else None,
        "mean_score_gap": fmean(pair["chosen_score"] - pair["rejected_score"] for pair in pairs) if pairs else None,
        "mean_reward": fmean(scores),
        **reward_means,
        "prompt_indices": indices,
    }
    staging = pairs_dir.with_name(pairs_dir.name + ".partial")  # renamed when complete: a kill leaves no half-saved pairs
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if curriculum is not None:  # the total score, what pairs are ranked by, is the curriculum's evidence
        sampling["curriculum"] = curriculum.record(round_number, indices, scores, n, staging)
    if pairs:  # datasets cannot save an empty dataset; sampling.json alone says the round found none
        datasets.Dataset.from_list(pairs).save_to_disk(str(staging))
    common.write_json(staging / "sampling.json", sampling)
    staging.rename(pairs_dir)


def preference_pairs(
    prompts: list[Any], completions: list[Any], scores: list[float], n: int, margin: float, per_prompt: int = 1,
) -> list[dict[str, Any]]:
    """Per prompt, up to `per_prompt` (chosen, rejected) pairs of its n completions whose scores differ, by at least `margin`.

    The prompt's completions are ranked best-first (the chosen side) and worst-first (the rejected side),
    ties in sample order, and pairs are taken by the sum of the two ranks, then the chosen rank: best vs
    worst first (so `per_prompt: 1` is IRPO's single pair), then best vs second worst, second best vs
    worst, and so on. With a 0/1 reward every pair is a correct x incorrect one, all of them once
    `per_prompt` reaches their product, and the larger gaps of a graded reward come first.
    """
    pairs = []
    for index, prompt in enumerate(prompts):
        group = range(index * n, (index + 1) * n)
        best_first = sorted(group, key=lambda sample: -scores[sample])
        worst_first = sorted(group, key=scores.__getitem__)
        candidates = sorted(
            (chosen_rank + rejected_rank, chosen_rank, best_first[chosen_rank], worst_first[rejected_rank])
            for chosen_rank in range(n) for rejected_rank in range(n)
            if 0 < scores[best_first[chosen_rank]] - scores[worst_first[rejected_rank]] >= margin
        )
        for _, _, chosen, rejected in candidates[:per_prompt]:
            pairs.append({
                "prompt": prompt, "chosen": completions[chosen], "rejected": completions[rejected],
                "chosen_score": scores[chosen], "rejected_score": scores[rejected],
            })
    return pairs


def round_log(sampling: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """A round's line in the stage's log: its pairs, their mean score gap, and the first and last logged
    value of each of ROUND_CURVES (TRL's DPO loss, implicit reward margin and pair accuracy)."""
    log = {"pairs": sampling["pairs_kept"], "mean_score_gap": sampling.get("mean_score_gap"), "steps": training.get("global_step")}
    for key, points in training.get("curves", {}).items():
        log[key] = [points[0][1], points[-1][1]] if points else None
    return log


def plot_rounds(records: list[dict[str, Any]], path: Path) -> None:
    """ROUND_CURVES of every trained round on one step axis (each round's steps after the previous round's)."""
    history, offset = [], 0
    for record in records:
        if not record["training"]:
            continue
        for key, points in record["training"].get("curves", {}).items():
            history.extend({"step": offset + step, key: value} for step, value in points)
        offset += record["training"]["global_step"]
    common.plot_curves(history, ROUND_CURVES, path)


def end_without_pairs(stage: StageFile, round_number: int, model_path: str, state: Any) -> None:
    """A round whose samples gave no pair: the rewards no longer separate the model's completions
    (often: it is right, or wrong, on every sample). In round 1 nothing was trained, an error; later,
    the stage ends early with the last trained model, and the metrics show the empty round."""
    message = (
        f"round {round_number}: on no prompt did the {stage.on_policy.num_completions} completions' scores differ "
        f"by margin {stage.on_policy.margin}"
    )
    if round_number == 1:
        raise RuntimeError(f"{message}; lower on_policy.margin, or raise temperature, num_completions or prompts_per_round")
    if state.is_main_process:
        common.log.warning("%s; the stage ends with round %d's model", message, round_number - 1)
        shutil.copytree(model_path, stage.model_dir, dirs_exist_ok=True)
    state.wait_for_everyone()


def run_on_policy(stage: StageFile, eval_pairs: Any) -> dict[str, Any]:
    """All rounds, skipping finished ones; the metrics of each round, and the last round's training metrics on top."""
    import datasets

    import rewards

    prompts = common.load_training_data(stage)
    reward_fns = [(spec.name, spec.weight, rewards.build(spec.name, spec.options)) for spec in stage.rewards]
    state = common.distributed_state()
    records, model_path, last_round = [], stage.model_path, stage.on_policy.rounds
    curriculum = None
    if stage.curriculum is not None:
        from stages.curriculum.rounds import RoundCurriculum

        curriculum = RoundCurriculum(stage.curriculum, prompts, stage.on_policy.prompts_per_round, last_round, stage.seed)
    for round_number in range(1, last_round + 1):
        round_stage = stage.model_copy(update={"stage_dir": stage.stage_dir / "rounds" / f"round_{round_number}", "model_path": model_path})
        save_as = stage if round_number == last_round else round_stage
        finished = round_stage.stage_dir / "round.json"
        if finished.is_file():
            if state.is_main_process:
                common.log.info("round %d finished in an earlier run; not repeated", round_number)
            record = json.loads(finished.read_text())
        else:
            pairs_dir = stage.stage_dir / "pairs" / f"round_{round_number}"
            if not pairs_dir.is_dir():
                if curriculum is None:
                    indices = round_prompt_indices(len(prompts), stage.on_policy.prompts_per_round, stage.seed, round_number)
                else:
                    indices = curriculum.prompts_for(round_number, pairs_dir.with_name(f"round_{round_number - 1}") if round_number > 1 else None)
                sample_pairs(round_stage, round_number, indices, prompts, reward_fns, pairs_dir, state, curriculum)
            state.wait_for_everyone()
            sampling = json.loads((pairs_dir / "sampling.json").read_text())
            if not sampling["pairs_kept"]:
                end_without_pairs(stage, round_number, model_path, state)
                records.append({"round": round_number, "sampling": sampling, "training": None})
                break
            pairs = datasets.load_from_disk(str(pairs_dir), keep_in_memory=True)  # TRL's map caches stay out of pairs/
            training = train(round_stage, pairs, eval_pairs, save_as)
            record = {"round": round_number, "sampling": sampling, "training": training, "log": round_log(sampling, training)}
            if state.is_main_process:
                common.log.info("round %d: %s", round_number, json.dumps(record["log"]))
                finished.parent.mkdir(parents=True, exist_ok=True)
                common.write_json(finished, record)
        records.append(record)
        model_path = str(save_as.model_dir)
    last_trained = next(record for record in reversed(records) if record["training"])
    if state.is_main_process:
        plot_rounds(records, stage.stage_dir / "rounds.png")
    return {**last_trained["training"], "rounds": records}


def run(stage: StageFile) -> None:
    eval_pairs = common.load_data(stage.eval_data).select_columns(PAIR_COLUMNS) if stage.eval_data else None
    if stage.on_policy is None:
        metrics = train(stage, common.load_training_data(stage), eval_pairs, save_as=stage)
    else:
        metrics = run_on_policy(stage, eval_pairs)
    common.finish(stage, metrics)


if __name__ == "__main__":
    run(common.start())
