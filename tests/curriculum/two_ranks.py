"""Two ranks, one curriculum: run by test_distributed.py as
`python -m torch.distributed.run --nproc_per_node 2 tests/curriculum/two_ranks.py <strategy> <out.json>`.

Each rank iterates its shard of the stream through accelerate's own `prepare_data_loader` (as the
trainer does), scores only its local completions with scores that differ by rank, and feeds them
through `ScoreFeedback` (the real `gather_object` path over gloo). At the end the ranks exchange a
digest of their sampler state and their local batches; rank 0 writes what it found to <out.json>.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist
from accelerate import PartialState
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stages.arguments import CurriculumArgs  # noqa: E402
from stages.curriculum.sampler import CurriculumSampler, RepeatLayout  # noqa: E402
from stages.curriculum.training import ScoreFeedback  # noqa: E402

LEVELS = np.repeat(np.arange(1, 7), 40)
PASS_RATE = np.array([0, 1.0, 0.95, 0.5, 0.45, 0.05, 0.0])
GENERATIONS = 60
LAYOUT = RepeatLayout(num_generations=4, prompts_per_generation=6, repeat_count=1)


def local_scores(prompts: list[int], generation: int, rank: int) -> list[float]:
    """Each rank scores its own completions, with draws that depend on the rank."""
    rng = np.random.default_rng([generation, rank])
    return (rng.random(len(prompts)) < PASS_RATE[LEVELS[prompts]]).astype(float).tolist()


def digest(sampler: CurriculumSampler) -> str:
    state = sampler.state_dict(sampler._drawing_epoch, sampler._drawing_position * LAYOUT.repeat_count)
    hasher = hashlib.sha256()
    for key in sorted(state):
        hasher.update(key.encode())
        hasher.update(np.ascontiguousarray(state[key]).tobytes())
    return hasher.hexdigest()


def main() -> None:
    strategy, out = sys.argv[1], Path(sys.argv[2])
    process = PartialState(cpu=True)  # gloo, as the ddp profile runs on a CPU machine
    sampler = CurriculumSampler(CurriculumArgs(strategy=strategy), LEVELS.tolist(), len(LEVELS), LAYOUT, seed=11, planned_generations=GENERATIONS)
    generation = 0
    feedback = ScoreFeedback(lambda prompts, completions, **columns: local_scores(prompts, generation, process.process_index), sampler)
    per_rank = LAYOUT.prompts_per_generation * LAYOUT.num_generations // process.num_processes
    loader = prepare_data_loader(
        DataLoader(range(len(LEVELS)), batch_size=per_rank, sampler=sampler),
        num_processes=process.num_processes, process_index=process.process_index,
    )
    local_batches: list[list[int]] = []
    while generation < GENERATIONS:
        for batch in loader:
            prompts = batch.tolist()
            local_batches.append(prompts)
            feedback(prompts=prompts, completions=[""] * len(prompts), curriculum_index=prompts)
            generation += 1
            if generation == GENERATIONS:
                break
    views = [None] * process.num_processes
    dist.all_gather_object(views, {"digest": digest(sampler), "batches": local_batches, "completions": float(sampler.evidence.bucket_completions.sum()),
                                   "share": sampler.bucket_share.tolist()})
    if process.is_main_process:
        out.write_text(json.dumps({"views": views, "per_rank": per_rank}))
    dist.barrier()
    # Without it, gloo's threads can still be running when the interpreter exits: "terminate called without
    # an active exception" (SIGABRT) on a rank that did all its work, seen once on a loaded machine.
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
