"""What every stage process shares: reading its stage file, building trainer args, resume, saving.

A stage is launched as `accelerate launch ... -m stages.<kind> <run_dir>/<stage>/stage.yaml`, and
that resolved stage file (`stages.arguments.StageFile`, which also lists the outputs) is all it reads.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol

import launch
from launch.atomic import write_atomically
from stages.arguments import DataBlock, StageFile

log = logging.getLogger("gradus")

# Warnings that say nothing a gradus user can act on, filtered one by one. Everything else TRL and
# transformers announce (deprecations, changed defaults) stays visible: those are how a change that
# breaks stages/trl_hooks.py's couplings shows up first.
QUIET_WARNINGS = (
    (FutureWarning, r"`gradient_checkpointing` is deprecated"),  # TRL configs still set the old name themselves
)


def start(argv: list[str] | None = None) -> StageFile:
    """Read the stage file named on the command line and prepare this process to run it."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: accelerate launch [...] -m stages.<kind> <run_dir>/<stage>/stage.yaml")
    stage = StageFile.read(argv[0])
    launch.terminate_with_parent()
    if os.getppid() == 1:
        sys.exit("gradus: the launcher of this stage is gone; not starting")
    logging.basicConfig(level=logging.INFO, format=f"[{stage.name}] %(message)s", force=True)
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    return stage


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def training_args(config_cls: type, stage: StageFile, planned_world_size: int | None = None, **gradus_defaults: Any) -> Any:
    """The kind's TRL config from the manifest's `args`, with what gradus owns filled in.

    Precedence: the manifest's `args` > gradus's defaults for this kind > TRL's defaults. On a
    machine with no GPU, `use_cpu` is set and bf16 (TRL's default) is turned off unless the
    manifest asked for it, so the same manifest runs on a laptop and a GPU node.

    `planned_world_size` is for the preflight (stages/preflight.py), which builds every stage's config
    in one process before anything launches: the config then checks its batch arithmetic (GRPO's
    generation batch, for one) against the processes the stage will be launched with, not against 1.
    """
    import torch

    values = {**gradus_defaults, **stage.args}
    if not torch.cuda.is_available():
        values.setdefault("use_cpu", True)
        values.setdefault("bf16", False)
    values.setdefault("seed", stage.seed)
    if planned_world_size is not None:
        config_cls = _with_world_size(config_cls, planned_world_size)
    # TensorBoard (report_to) writes to <stage>/tensorboard, one run per stage that a resume continues,
    # not transformers' default of a new checkpoints/runs/<date>_<host>/ per attempt.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(stage.stage_dir / "tensorboard")
    return config_cls(output_dir=str(stage.checkpoint_dir), **values)


def _with_world_size(config_cls: type, world_size: int) -> type:
    """`config_cls` reporting `world_size` processes without a process group (transformers'
    `TrainingArguments.world_size` property, which TRL's `__post_init__` checks read)."""

    class Planned(config_cls):  # type: ignore[misc, valid-type]
        @property
        def world_size(self) -> int:
            return world_size

    Planned.__name__ = config_cls.__name__
    return Planned


def distributed_state() -> Any:
    """The processes of this launch, as a trainer would see them.

    A bare `PartialState()` on a CPU-only machine ignores the launcher's world size unless told
    `cpu=True`: every process would believe it is alone and do all the work.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def last_checkpoint(stage: StageFile) -> str | None:
    """The newest *complete* checkpoint an interrupted run of this very stage left, if any.

    Not plain `get_last_checkpoint`: a kill while saving leaves a checkpoint that is incomplete or
    cut short, and resuming from it would fail on every rerun (stages/checkpoints.py sets it aside).
    """
    from stages.checkpoints import resume_checkpoint

    return resume_checkpoint(stage.checkpoint_dir)


def load_data(spec: DataBlock) -> Any:
    """The `datasets.Dataset` of a stage's `data:` (or `eval_data:`) block."""
    import data_recipes

    return data_recipes.load(spec.recipe, spec.options)


REPLAY_REPORT = "replay.json"


def with_replay(dataset: Any, stage: StageFile) -> Any:
    """The stage's data with its `replay` share of the replayed stage's data mixed in (`data_recipes.replay`),
    and what was drawn written to `replay.json`, which `finish` adds to the metrics."""
    from data_recipes.replay import mixed_in

    replay = stage.data.replay
    mixed, counts = mixed_in(dataset, load_data(replay.data), replay.fraction, stage.seed)
    if is_main_process():
        stage.stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(stage.stage_dir / REPLAY_REPORT, {"stage": replay.stage, "fraction": replay.fraction, **counts, "seed": stage.seed})
    log.info("replay: %d rows of stage %r's data mixed into %d", counts["replayed_rows"], replay.stage, counts["own_rows"])
    return mixed


def load_training_data(stage: StageFile) -> Any:
    """The stage's training set: its data with the `replay` share of an earlier stage's mixed in, then with
    problems that overlap the manifest's eval sets reported in `decontamination.json` and (by default)
    removed, replayed rows included (`data_recipes.decontamination.find_overlap` says which, and when a
    removal is refused). Every process computes the same result; the main one writes the report."""
    dataset = load_data(stage.data)
    if stage.data.replay is not None:
        dataset = with_replay(dataset, stage)
    check = stage.decontaminate
    if not check:
        return dataset
    from data_recipes.decontamination import find_overlap

    overlap = find_overlap(dataset, (load_data(spec) for spec in check.against), check.ngram, check.remove, check.max_removed_fraction)
    report = stage.stage_dir / "decontamination.json"
    if is_main_process():
        stage.stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(report, overlap.report)
        if overlap.rows and not overlap.refused:
            log.info("decontamination: %d of %d training problems overlap the eval sets%s", len(overlap.rows), len(dataset),
                     ", removed" if check.remove else " (kept: decontamination.remove is false)")
    if overlap.refused:
        raise RuntimeError(overlap.refusal(report))
    return overlap.kept(dataset)


def peft_config(stage: StageFile) -> Any:
    """A peft LoraConfig from the stage's `peft:` block (its keys are LoraConfig's own fields)."""
    if not stage.peft:
        return None
    from peft import LoraConfig

    return LoraConfig(**{"task_type": "CAUSAL_LM", **stage.peft})


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class Completions(list):
    """Decoded completions (a list of str), with `clipped`: for each, did it stop at the token limit rather than
    at an end of sequence? A clipped answer is usually scored wrong, so a stage reports how many there were.
    `tokens`: each one's generated tokens up to and including its end of sequence, for throughput figures."""

    clipped: list[bool]
    tokens: list[int]


def generate(
    model: Any, tokenizer: Any, prompts: list[Any], max_new_tokens: int, batch_size: int,
    temperature: float = 0.0, top_p: float = 1.0, num_return_sequences: int = 1,
) -> Completions:
    """Batched completions for prompts (plain strings, or chat messages rendered by the template once, with
    the generation prompt; nothing is added to the text the template made).

    Temperature 0 means greedy. With `num_return_sequences` n, the n completions of each prompt are
    consecutive in the result. Generation stops at any of the model's end-of-sequence tokens.
    """
    import torch
    from tqdm import tqdm

    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    stop_ids = end_of_sequence_ids(model, tokenizer)
    completions, clipped, tokens = Completions(), [], []
    for begin in tqdm(range(0, len(prompts), batch_size), desc="generating", disable=not is_main_process()):
        inputs = prompt_inputs(tokenizer, prompts[begin : begin + batch_size]).to(model.device)
        with torch.no_grad():
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids,
                num_return_sequences=num_return_sequences, **sampling,
            )
        generated = output[:, inputs["input_ids"].shape[1] :]
        completions += tokenizer.batch_decode(generated, skip_special_tokens=True)
        for row in generated.tolist():
            stop = next((position for position, token in enumerate(row) if token in stop_ids), None)
            clipped.append(stop is None)
            tokens.append(len(row) if stop is None else stop + 1)
    completions.clipped, completions.tokens = clipped, tokens
    return completions


def prompt_inputs(tokenizer: Any, prompts: list[Any]) -> Any:
    """The token ids generation starts from: a chat prompt rendered by the template (which writes every special
    token itself, so the tokenizer adds none: a second BOS or system block would be a prompt the model never
    saw), a plain prompt as it is. Left-padded, so every row's completion starts at the same column."""
    tokenizer.padding_side = "left"
    texts = [prompt if isinstance(prompt, str) else tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) for prompt in prompts]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def end_of_sequence_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a completion: the generation config's (a list for some chat models) and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({token for token in [*ids, tokenizer.eos_token_id] if token is not None})


Sampler = Callable[[list[Any], int], list[str]]
"""Given prompts (texts or chat messages) and n, n sampled completions of each (those of one prompt consecutive)."""


class SamplingArgs(Protocol):
    """What a sampling stage's args say about sampling (PRMLabelArgs, DifficultyArgs)."""

    max_new_tokens: int
    batch_size: int  # sequences (prompts x n) per generate call
    temperature: float
    top_p: float


def policy_sampler(model: Any, tokenizer: Any, args: SamplingArgs) -> Sampler:
    """The stage's model as a `Sampler`: batched HF generation at the stage's temperature."""

    def sample(prompts: list[Any], n: int) -> list[str]:
        return generate(
            model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=max(1, args.batch_size // n),
            temperature=args.temperature, top_p=args.top_p, num_return_sequences=n,
        )

    return sample


def save_final_model(trainer: Any, stage: StageFile) -> None:
    """Save the trained model where later stages look for it; LoRA adapters are merged first, so a
    later stage loads a plain model whatever this one trained."""
    trainer.accelerator.wait_for_everyone()
    if stage.peft:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if trainer.accelerator.is_main_process:
            unwrapped.save_pretrained(stage.stage_dir / "adapter")
            unwrapped.merge_and_unload().save_pretrained(stage.model_dir)
    else:
        trainer.save_model(str(stage.model_dir))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(stage.model_dir)
    trainer.accelerator.wait_for_everyone()


def train_and_save(
    trainer: Any, stage: StageFile, curves: list[str], save_as: StageFile | None = None, evaluate: bool = False,
) -> dict[str, Any]:
    """What every training stage does with its trainer: train (resuming from the stage's last complete
    checkpoint), save the final model where later stages look for it, optionally run the trainer's own
    evaluation on its eval set, and plot `curves` next to the model. `save_as` is where the model and
    plot go when that is not `stage` (a DPO round). Returns the training (and eval) metrics."""
    save_as = save_as or stage
    trainer.add_callback(stop_past_the_last_step())
    try:
        train_metrics = trainer.train(resume_from_checkpoint=last_checkpoint(stage)).metrics
    except TrainingAlreadyDone:
        log.info("the checkpoint resumed from is the last step's: no step left to train")
        train_metrics = {}
    save_final_model(trainer, save_as)
    metrics = training_metrics(trainer, train_metrics)
    if evaluate and trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    if trainer.accelerator.is_main_process:
        plot_curves(trainer.state.log_history, curves, save_as.stage_dir / "training.png")
    return metrics


def sampling_metrics(log_history: list[dict[str, Any]], reward_functions: list[Callable]) -> dict[str, Any]:
    """What a stage that samples completions as it trains (grpo, distill) reports of them: the share cut at
    `max_completion_length` over the whole stage (most rewards score them 0; report.md's `clipped`), and per
    reward what it could not score on this rank (rows that raised, golds that are not math for math_accuracy)."""
    clipped = [entry["completions/clipped_ratio"] for entry in log_history if "completions/clipped_ratio" in entry]
    metrics: dict[str, Any] = {"clipped_fraction": sum(clipped) / len(clipped) if clipped else None}
    if reward_functions:
        metrics["reward_errors"] = {fn.__name__: fn.errors for fn in reward_functions}
        metrics["rewards"] = {fn.__name__: fn.metrics() for fn in reward_functions}
    return metrics


class TrainingAlreadyDone(Exception):
    """The trainer resumed from the checkpoint of its last step: there is nothing left to train."""


def stop_past_the_last_step() -> Any:
    """A callback that raises `TrainingAlreadyDone` before a step past `max_steps` begins.

    A stage killed after its last checkpoint but before `done.json` (while saving the final model)
    resumes from that checkpoint, and transformers' loop (5.x) takes one more optimizer step before
    it checks for the end: the resumed run would end one step past the uninterrupted one. Raised at
    `on_step_begin`, after the checkpoint's weights, optimizer and state are loaded and before any
    forward pass, so what is saved is exactly the last checkpoint. Every rank raises alike.
    """
    from transformers import TrainerCallback

    class StopPastTheLastStep(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if 0 < state.max_steps <= state.global_step:
                raise TrainingAlreadyDone

    return StopPastTheLastStep()


def training_metrics(trainer: Any, train_metrics: dict[str, Any]) -> dict[str, Any]:
    """Loss at the first and last logged step next to HF's own train metrics (none when the stage
    resumed at its last step), the step reached and how many processes reached it."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {key: value for key, value in train_metrics.items() if isinstance(value, (int, float))}
    metrics["global_step"] = trainer.state.global_step
    metrics["num_processes"] = trainer.accelerator.num_processes
    metrics["distributed_type"] = str(trainer.accelerator.distributed_type.value)
    if losses:
        metrics["first_loss"], metrics["final_loss"] = losses[0], losses[-1]
    return metrics


def plot_curves(log_history: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """One PNG with a panel per logged quantity against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [key for key in keys if any(key in entry for entry in log_history)]
    if not present:
        return
    columns = min(4, len(present))  # rows of at most four panels
    rows = -(-len(present) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat[len(present):]:
        axis.set_visible(False)
    for axis, key in zip(axes.flat, present):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        axis.plot(*zip(*points), marker=".")
        axis.set_xlabel("step")
        axis.set_title(key)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def finish(stage: StageFile, metrics: dict[str, Any]) -> None:
    """Write metrics and then the done marker (last, so its presence means everything is there),
    and close the process group cleanly (multi-process DeepSpeed aborts at exit otherwise)."""
    if is_main_process():
        if stage.data.replay is not None:
            metrics = {**metrics, "replay": json.loads((stage.stage_dir / REPLAY_REPORT).read_text())}
        write_json(stage.stage_dir / "metrics.json", metrics)
        write_json(stage.stage_dir / "done.json", {"fingerprint": stage.fingerprint})
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def write_json(path: Path, payload: Any) -> None:
    write_atomically(path, json.dumps(payload, indent=2, default=str) + "\n")


# -- sampling stages done in shards (prm_label, difficulty): resumable by shard, split over processes --

SHARD_DIR = "partial"
DATASET_DIR = "dataset"


def shard_path(stage: StageFile, shard: int) -> Path:
    return stage.stage_dir / SHARD_DIR / f"shard-{shard:05d}.json"


def finished_shard(stage: StageFile, shard: int) -> dict[str, Any] | None:
    """A shard an earlier run of this very stage (same fingerprint) finished, or None."""
    path = shard_path(stage, shard)
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    return payload if payload.get("fingerprint") == stage.fingerprint else None


def write_shard(stage: StageFile, shard: int, payload: dict[str, Any]) -> None:
    """Write a finished shard, stamped with the stage's fingerprint, atomically: a kill leaves it whole or absent."""
    path = shard_path(stage, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"fingerprint": stage.fingerprint, "shard": shard, **payload}))


def unfinished_shards(stage: StageFile, num_shards: int, state: Any) -> tuple[list[int], int]:
    """This process's share of the shards that no earlier run finished, and how many of its share were.

    The shards are split between the processes by number (`split_between_processes`), so no shard is
    sampled twice; what a kill left half-written is removed first (finished shards are whole files).
    """
    if state.is_main_process:
        for leftover in (stage.stage_dir / SHARD_DIR).glob(".*.tmp"):
            leftover.unlink()
    state.wait_for_everyone()
    with state.split_between_processes(list(range(num_shards))) as my_shards:
        todo = [shard for shard in my_shards if finished_shard(stage, shard) is None]
    return todo, len(my_shards) - len(todo)


def all_finished_shards(stage: StageFile, num_shards: int) -> list[dict[str, Any]]:
    """Every shard's payload, in order, once all processes are done (an error names any missing)."""
    shards = [finished_shard(stage, shard) for shard in range(num_shards)]
    missing = [shard for shard, payload in enumerate(shards) if payload is None]
    if missing:
        raise RuntimeError(f"{stage.kind}: shards {missing} were not written")
    return shards


def save_dataset(rows: list[dict[str, Any]], path: Path) -> None:
    """`save_to_disk` through a staging directory, so `dataset/` only ever holds a whole dataset."""
    import shutil

    import datasets

    staging = path.with_name(path.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    datasets.Dataset.from_list(rows).save_to_disk(str(staging))
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)
