"""ReLIFT inside the grpo stage: SFT steps on the demonstrations of prompts GRPO cannot solve yet.

A group in which no completion passes carries no advantage (every reward ties at failure): GRPO learns
nothing from it, however often the prompt comes back. ReLIFT (Ma et al. 2025, ../shared/research/papers.md)
puts such prompts in a hard buffer and, once it holds a batch, takes a supervised step on their
demonstrations (the data's worked solutions), so the model learns what it could not discover. Only the
demonstrations of failed prompts are used: the share of the data they make up is what ReLIFT saves
against SFT on all of it, and is logged. `replay_solved` adds demonstrations of prompts GRPO already
solves to each SFT step: on a small model, SFT on the hardest prompts alone overwrites what it solved.
`lr_scheduler_type` decays the SFT steps' rate to 0 over the stage: large early steps teach the format GRPO
cannot find, and the small late ones leave GRPO to sharpen what was learned (BENCHMARKS.md, "ReLIFT").

How it fits TRL (through stages/trl_hooks.py, whose couplings tests/curriculum/test_trl_contract.py pins),
as a grpo add-on (stages/addons.py):

* `FailedGroups` wraps the signal reward as the curriculum's `ScoreFeedback` does (both are
  `trl_hooks.GatheredScores`): on training batches (they carry the `relift_index` column) it all-gathers (row,
  score) pairs, so every rank records the same failed prompts in the same order: the buffers of all
  ranks stay identical without any other exchange.
* `ReliftCallback.on_step_end` runs after HF's optimizer step and before its checkpoint save. It takes
  the SFT step there, through the trainer's own (DDP-wrapped) model, with an AdamW of its own, then writes
  the buffer, counters and that optimizer's state into the checkpoint when HF is about to save one, so a
  resume is exact. Its own optimizer, not GRPO's: an SFT gradient is far larger than a GRPO one, and in
  GRPO's Adam second moments it would shrink every later GRPO step for about 1/(1 - beta2) steps (on the
  tiny benchmark neither choice kept SFT steps from costing the easy levels: BENCHMARKS.md, "ReLIFT").
  The price is a second set of Adam moments (two fp32 copies of the trainable weights). GRPO's
  learning-rate scheduler is not stepped by SFT steps.
* Every rank takes every SFT step, each on its share of the batch (so DDP's gradient all-reduce
  matches), and the loss is the mean cross-entropy over demonstration tokens only (the prompt's are masked).

Supported: one process or DDP, in fp32 or bf16. DeepSpeed and fp16 are refused: their backward passes
step or scale inside accelerate in ways this step does not replay.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback

from launch.atomic import replacing
from stages.addons import signal_reward, with_index_column, wrap_signal_reward
from stages.arguments import RELIFT_INDEX_COLUMN, ReliftArgs
from stages.trl_hooks import GatheredScores, checkpoint_file, log_train_metric, unwrapped_optimizer

STATE_FILE = "relift_state.npz"
OPTIMIZER_FILE = "relift_optimizer.pt"  # the SFT steps' AdamW state, from the first SFT step on


@dataclass
class HardBuffer:
    """The prompts waiting for an SFT step (oldest first, no repeats), the prompts whose latest group passed
(`solved`, what `replay_solved` draws from) and what ReLIFT has done so far."""

    num_prompts: int
    pass_threshold: float
    waiting: list[int] = field(default_factory=list)
    used: np.ndarray = field(init=False)  # per prompt: its demonstration was trained on at least once
    solved: np.ndarray = field(init=False)  # per prompt: its latest scored group had a passing completion
    replayed: np.ndarray = field(init=False)  # per prompt: its demonstration was replayed as a solved one
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("groups_seen", "groups_failed", "sft_steps", "demonstrations_trained", "solved_replayed"), 0))
    last_sft_loss: float = math.nan

    def __post_init__(self) -> None:
        self.used = np.zeros(self.num_prompts, bool)
        self.solved = np.zeros(self.num_prompts, bool)
        self.replayed = np.zeros(self.num_prompts, bool)

    def record(self, prompt_indices: list[int], scores: list[float]) -> None:
        """One generation batch (every rank's rows, in gathered order): each prompt whose scored completions
        all fall below `pass_threshold` joins the buffer unless already in it, and every other scored prompt
        counts as solved until a later group of it fails. Unscored (NaN) completions count for nothing; a
        group with none scored is neither."""
        groups: dict[int, list[float]] = {}
        for index, score in zip(prompt_indices, scores, strict=True):
            groups.setdefault(index, []).append(score)
        waiting = set(self.waiting)
        for index, group in groups.items():
            scored = [score for score in group if not math.isnan(score)]
            if not scored:
                continue
            self.counters["groups_seen"] += 1
            self.solved[index] = max(scored) >= self.pass_threshold
            if not self.solved[index]:
                self.counters["groups_failed"] += 1
                if index not in waiting:
                    self.waiting.append(index)
                    waiting.add(index)

    def take(self, count: int) -> list[int]:
        """The oldest `count` waiting prompts, out of the buffer and marked used."""
        taken, self.waiting = self.waiting[:count], self.waiting[count:]
        self.used[taken] = True
        self.counters["demonstrations_trained"] += len(taken)
        return taken

    def draw_solved(self, count: int, seed: int, multiple: int = 1) -> list[int]:
        """Up to `count` solved prompts, without repeats, a multiple of `multiple` of them (one share per
        rank). Seeded by (`seed`, SFT steps so far), so every rank and a resumed run draw the same rows."""
        solved = np.flatnonzero(self.solved)
        count = min(count, len(solved)) // multiple * multiple
        drawn = np.random.default_rng([seed, self.counters["sft_steps"]]).choice(solved, size=count, replace=False).tolist()
        self.replayed[drawn] = True
        self.counters["solved_replayed"] += count
        return drawn

    @property
    def used_share(self) -> float:
        """Distinct demonstrations of failed prompts trained on, as a share of all of them (what SFT on the
        whole data takes): ReLIFT's saving. Replayed solved prompts are counted apart (`summary`)."""
        return float(self.used.mean())

    def log_values(self) -> dict[str, float]:
        values = {"relift/buffer_size": float(len(self.waiting)), "relift/sft_steps": float(self.counters["sft_steps"]),
                  "relift/demonstrations_used_share": self.used_share, "relift/solved_replayed": float(self.counters["solved_replayed"])}
        return values | ({} if math.isnan(self.last_sft_loss) else {"relift/sft_loss": self.last_sft_loss})

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "identity": np.array(json.dumps({"num_prompts": self.num_prompts, "pass_threshold": self.pass_threshold})),
            "waiting": np.array(self.waiting, np.int64), "used": self.used, "solved": self.solved, "replayed": self.replayed,
            "counters": np.array(json.dumps(self.counters)), "last_sft_loss": np.array(self.last_sft_loss),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        identity = {"num_prompts": self.num_prompts, "pass_threshold": self.pass_threshold}
        if json.loads(str(state["identity"])) != identity:
            raise ValueError(f"relift state is for another buffer: saved {str(state['identity'])}, this one {identity}")
        self.waiting = [int(index) for index in state["waiting"]]
        self.used = np.array(state["used"], bool)
        self.solved = np.array(state["solved"], bool)
        self.replayed = np.array(state["replayed"], bool)
        self.counters = json.loads(str(state["counters"]))
        self.last_sft_loss = float(state["last_sft_loss"])

    def digest(self) -> str:
        """A hash of the whole state: equal on two ranks exactly when their buffers and counters are."""
        hasher = hashlib.sha256()
        for key, value in sorted(self.state_dict().items()):
            hasher.update(key.encode())
            hasher.update(np.ascontiguousarray(value).tobytes())
        return hasher.hexdigest()[:16]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, suffix=".npz") as temporary:
            np.savez(temporary, **self.state_dict())

    def load(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as state:
            self.load_state_dict(dict(state))


class FailedGroups(GatheredScores):
    """The signal reward, reporting every training batch's groups to the hard buffer."""

    index_column = RELIFT_INDEX_COLUMN

    def __init__(self, reward_fn: Callable[..., list[float | None]], buffer: HardBuffer) -> None:
        super().__init__(reward_fn)
        self.buffer = buffer

    def record(self, prompt_indices: list[int], scores: list[float], log_metric: Callable[[str, float], None] | None) -> None:
        self.buffer.record(prompt_indices, scores)


def tokenize_demonstration(tokenizer: Any, prompt: Any, demonstration: Any, max_length: int) -> tuple[list[int], int]:
    """(token ids of prompt + demonstration + EOS, number of prompt tokens), as TRL tokenises them: a
    plain prompt as text (what GRPO generates from) with the demonstration after it (SFTTrainer's
    prompt-completion rows), a conversational one through the chat template."""
    if isinstance(prompt, str):
        prompt_ids = tokenizer(text=prompt)["input_ids"]
        ids = tokenizer(text=prompt + demonstration)["input_ids"]
    else:
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        ids = tokenizer.apply_chat_template(prompt + demonstration, tokenize=True, return_dict=True)["input_ids"]
    if tokenizer.eos_token_id is not None and ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    return ids[:max_length], len(prompt_ids)


def demonstration_batch(tokenizer: Any, rows: list[dict[str, Any]], column: str, max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding) for these rows."""
    encoded = [tokenize_demonstration(tokenizer, row["prompt"], row[column], max_length) for row in rows]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, prompt_length) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, prompt_length : len(ids)] = torch.tensor(ids[prompt_length:], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class ReliftCallback(TrainerCallback):
    """Takes the SFT steps, keeps the buffer in every checkpoint (restoring it on resume) and logs it.

    `trainer` is set once the trainer exists (`GRPORelift.attach`). Every rank runs `on_step_end` at the
    same step with the same buffer, so every rank takes the same SFT steps."""

    def __init__(self, args: ReliftArgs, buffer: HardBuffer, dataset: Any) -> None:
        self.args, self.buffer, self.dataset = args, buffer, dataset
        self.trainer: Any = None
        self._optimizer: torch.optim.AdamW | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step > 0:
            path = checkpoint_file(args.output_dir, state.global_step, STATE_FILE)
            if not path.is_file():
                raise FileNotFoundError(f"resuming at step {state.global_step}, but {path} is missing: the checkpoint has no relift state")
            self.buffer.load(path)
            if self.buffer.counters["sft_steps"]:
                saved = checkpoint_file(args.output_dir, state.global_step, OPTIMIZER_FILE)
                if not saved.is_file():
                    raise FileNotFoundError(f"resuming at step {state.global_step} after SFT steps, but {saved} is missing")
                self.optimizer().load_state_dict(torch.load(saved, map_location="cpu", weights_only=True))

    def optimizer(self) -> torch.optim.AdamW:
        """The SFT steps' own AdamW over the trainable weights, with the trainer's betas, eps and weight
        decay. Not GRPO's: SFT gradients are far larger than GRPO's, and in GRPO's second moments they
        would shrink every later GRPO step for about 1/(1 - beta2) steps."""
        if self._optimizer is None:
            args = self.trainer.args
            self._optimizer = torch.optim.AdamW([weight for weight in self.trainer.model.parameters() if weight.requires_grad],
                                                lr=self.args.learning_rate or args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                                eps=args.adam_epsilon, weight_decay=args.weight_decay)
        return self._optimizer

    def save(self, output_dir: str, step: int) -> None:
        """The buffer and counters, and the SFT optimizer once it has stepped, into checkpoint-`step`."""
        self.buffer.save(checkpoint_file(output_dir, step, STATE_FILE))
        if self._optimizer is not None:
            torch.save(self._optimizer.state_dict(), checkpoint_file(output_dir, step, OPTIMIZER_FILE))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        rate = self.learning_rate(state.global_step, state.max_steps)
        if state.global_step % self.args.every_n_steps == 0 and len(self.buffer.waiting) >= self.args.sft_batch_size:
            rows = self.buffer.take(self.args.sft_batch_size)
            if self.args.replay_solved:
                rows += self.buffer.draw_solved(self.args.replay_solved, args.seed, multiple=self.trainer.accelerator.num_processes)
            self.buffer.last_sft_loss = self.sft_step(rows, rate)
            self.buffer.counters["sft_steps"] += 1
        log_train_metric(self.trainer, "relift/sft_learning_rate", rate)
        for name, value in self.buffer.log_values().items():
            log_train_metric(self.trainer, name, value)
        if control.should_save and state.is_world_process_zero:
            self.save(args.output_dir, state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A save decided after `on_step_end` (`save_strategy: best`) gets the state here."""
        if state.is_world_process_zero and not checkpoint_file(args.output_dir, state.global_step, STATE_FILE).is_file():
            self.save(args.output_dir, state.global_step)

    def learning_rate(self, step: int, max_steps: int) -> float:
        """The SFT step's rate after GRPO step `step` of `max_steps`: GRPO's current one when `learning_rate`
        is unset, else `learning_rate` held or decayed to 0 at `max_steps`. A function of the step alone, so a
        resumed run takes the same steps with nothing more saved."""
        if self.args.learning_rate is None:
            return unwrapped_optimizer(self.trainer.optimizer).param_groups[0]["lr"]
        progress = min(step / max_steps, 1.0)
        decay = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}
        return self.args.learning_rate * decay[self.args.lr_scheduler_type]

    def sft_step(self, indices: list[int], learning_rate: float) -> float:
        """One step of the SFT optimizer at `learning_rate` on these rows' demonstrations (this rank's share),
        through the trainer's (DDP-wrapped) model; returns the loss averaged over the ranks."""
        trainer = self.trainer
        accelerator = trainer.accelerator
        mine = indices[accelerator.process_index :: accelerator.num_processes]
        batch = demonstration_batch(trainer.processing_class, [self.dataset[index] for index in mine], self.args.demonstration_column, self.args.max_length)
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        optimizer = self.optimizer()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        try:
            with accelerator.autocast():
                loss = trainer.model_wrapped(**batch, use_cache=False).loss
            loss.backward()  # through the DDP wrapper: gradients are all-reduced like GRPO's
            if trainer.args.max_grad_norm and trainer.args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
            optimizer.step()
        finally:
            trainer.model.zero_grad(set_to_none=True)
        return float(accelerator.reduce(loss.detach(), reduction="mean"))


@dataclass
class GRPORelift:
    """The relift add-on (stages/addons.py): the data with its `relift_index` column, the rewards with
    the signal one wrapped in `FailedGroups`, the buffer and the callback that takes the SFT steps."""

    block: ClassVar[str] = "relift"
    args: ReliftArgs
    buffer: HardBuffer
    train_dataset: Any
    rewards: list[Callable]
    callback: ReliftCallback

    @property
    def callbacks(self) -> list[Any]:
        """Its one callback: the callback that takes the SFT steps and keeps the buffer."""
        return [self.callback]

    @classmethod
    def unmet_requirement(cls, args: ReliftArgs, config: Any) -> str | None:
        """What relift needs of the GRPOConfig and does not get, as "field: why", or None. The preflight asks
        at plan time; the manifest checks the launch profile and the SFT batch against the process count."""
        if config.remove_unused_columns:
            return "args.remove_unused_columns: relift needs false (its reward reads the relift_index column)"
        if config.fp16:
            return "args.fp16: relift supports fp32 and bf16 (its SFT step steps its optimizer without a loss scaler)"
        if config.deepspeed or config.deepspeed_plugin is not None:
            return "args.deepspeed: relift runs on one process or DDP (its SFT step runs its own optimizer outside DeepSpeed's engine)"
        return None

    @classmethod
    def build(cls, spec: ReliftArgs | dict[str, Any], grpo_args: Any, train_dataset: Any, rewards: list[Callable]) -> GRPORelift:
        args = ReliftArgs.model_validate(spec)
        unmet = cls.unmet_requirement(args, grpo_args)
        if unmet:
            raise ValueError(unmet)
        if args.sft_batch_size % grpo_args.world_size:  # the manifest checks it against the planned launch; this is the real one
            raise ValueError(f"relift.sft_batch_size {args.sft_batch_size} must be a multiple of the {grpo_args.world_size} processes")
        signal = signal_reward(rewards, args.signal_reward, cls.block)
        buffer = HardBuffer(len(train_dataset), args.pass_threshold)
        wrapped = wrap_signal_reward(rewards, signal, lambda reward: FailedGroups(reward, buffer))
        indexed = with_index_column(train_dataset, RELIFT_INDEX_COLUMN)
        return cls(args, buffer, indexed, wrapped, ReliftCallback(args, buffer, indexed))

    def trainer_class(self, base: type) -> type:
        """`base` unchanged: relift acts from its callback, between the trainer's steps."""
        return base

    def attach(self, trainer: Any) -> None:
        """Give the callback the trainer whose model and optimizer its SFT steps use."""
        self.callback.trainer = trainer

    def summary(self) -> dict[str, Any]:
        """For the stage metrics: what ReLIFT did, and each rank's state digest (all equal, or a bug)."""
        return {
            **self.buffer.counters, "buffer_size": len(self.buffer.waiting), "demonstrations_used": int(self.buffer.used.sum()),
            "demonstrations_used_share": round(self.buffer.used_share, 4),
            "any_demonstration_share": round(float((self.buffer.used | self.buffer.replayed).mean()), 4),  # failed or replayed
            "final_sft_loss": None if math.isnan(self.buffer.last_sft_loss) else round(self.buffer.last_sft_loss, 4),
            "state_digest_per_rank": gather_object([self.buffer.digest()]),
        }
