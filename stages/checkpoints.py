"""Which checkpoint a stage resumes from: the newest *complete* one, with broken ones set aside.

Preemption does not wait for a save to finish: a job killed while the trainer writes
`checkpoint-N/` leaves a directory with some files missing, cut short, or (DeepSpeed) a `latest`
naming a step directory that was never written. Resuming from it fails, and it fails the same way
on every rerun, because it stays the newest. So before a stage resumes, its checkpoints are
checked newest first without loading anything (no torch at import, no tensor read):

    every layout   `trainer_state.json` present and valid JSON (HF writes it last); every torch
                   file (`*.pt`, `*.pth`, `*.bin`) and `*.npz` is a whole zip archive (the central
                   directory, written last, is there); every `*.safetensors` is as long as its
                   header says
    HF             the weights (`model.safetensors`, shards named by an index, an adapter, or
                   `pytorch_model.bin`), `optimizer.pt` and `scheduler.pt`
    DeepSpeed      `latest` names a `global_stepN/` that exists, holding the model states and an
                   optimizer shard for every rank from 0 up (ZeRO-3 may have no HF weight file)

Each newer checkpoint that fails is moved to `checkpoints/.incomplete/` with a one-line warning
naming it and why; the first complete one is resumed from; with none the stage starts over. Only
rank 0 looks and moves, and broadcasts its choice, so every rank resumes from the same step.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from pathlib import Path

log = logging.getLogger("gradus")

INCOMPLETE_DIR = ".incomplete"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
_ZIP_SUFFIXES = {".pt", ".pth", ".bin", ".npz"}
# HF weight files by preference; an index names the shards that must all be there.
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
_HF_OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt")
_OPTIMIZER_SHARD = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")


def resume_checkpoint(checkpoint_dir: Path) -> str | None:
    """The checkpoint every rank of this stage resumes from (None: start over).

    Rank 0 checks and sets broken checkpoints aside; the others receive its answer, so no rank
    looks at a directory while it is being moved and all agree on the step.
    """
    import torch.distributed as dist

    main = int(os.environ.get("RANK", "0")) == 0
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        main = dist.get_rank() == 0
        box = [newest_complete(checkpoint_dir, set_aside=True) if main else None]
        dist.broadcast_object_list(box, src=0)
        chosen = box[0]
    else:
        chosen = newest_complete(checkpoint_dir, set_aside=main)
    if chosen is not None and main:
        log.info("resuming from checkpoint %s", chosen)
    return None if chosen is None else str(chosen)


def newest_complete(checkpoint_dir: Path, set_aside: bool) -> Path | None:
    """The newest complete `checkpoint-N/` under `checkpoint_dir`; newer broken ones are moved to
    `.incomplete/` (when `set_aside`) with a warning. Older checkpoints are not looked at."""
    broken = 0
    for checkpoint in sorted(_checkpoints(checkpoint_dir), key=_step, reverse=True):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        broken += 1
        if set_aside:
            target = _set_aside(checkpoint)
            log.warning("checkpoint %s is incomplete (%s); moved to %s", checkpoint, problem, target)
    if broken and set_aside:
        log.warning("no complete checkpoint left in %s: the stage starts over", checkpoint_dir)
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, in a few words, or None when it is complete."""
    try:
        return _first_problem(checkpoint)
    except OSError as error:  # a file vanished or cannot be read while we look
        return f"{error.filename or checkpoint}: {error.strerror or error}"


def _first_problem(checkpoint: Path) -> str | None:
    state = checkpoint / TRAINER_STATE
    if not state.is_file():
        return f"{TRAINER_STATE} missing"
    try:
        json.loads(state.read_text())
    except ValueError:
        return f"{TRAINER_STATE} is not valid JSON"
    for path in sorted(checkpoint.rglob("*")):
        problem = _file_problem(path) if path.is_file() else None
        if problem:
            return f"{path.relative_to(checkpoint)} {problem}"
    deepspeed = (checkpoint / "latest").is_file() or any(checkpoint.glob("global_step*"))
    return _deepspeed_problem(checkpoint) if deepspeed else _hf_problem(checkpoint)


def _hf_problem(checkpoint: Path) -> str | None:
    weights = _weight_problem(checkpoint)
    if weights:
        return weights
    missing = [name for name in _HF_OPTIMIZER_FILES if not (checkpoint / name).is_file()]
    return f"{', '.join(missing)} missing" if missing else None


def _weight_problem(checkpoint: Path) -> str | None:
    for index_name in _WEIGHT_INDEXES:
        index = checkpoint / index_name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (ValueError, KeyError, AttributeError):
                return f"{index_name} is not a valid weight index"
            missing = sorted(shard for shard in shards if not (checkpoint / shard).is_file())
            return f"weight shard {missing[0]} missing" if missing else None
    if any((checkpoint / name).is_file() for name in _WEIGHT_FILES):
        return None
    return f"no weight file ({', '.join(_WEIGHT_FILES[:2])}, ...)"


def _deepspeed_problem(checkpoint: Path) -> str | None:
    latest = checkpoint / "latest"
    if not latest.is_file():
        return "DeepSpeed 'latest' missing"
    tag = latest.read_text().strip()
    step_dir = checkpoint / tag
    if not tag or not step_dir.is_dir():
        return f"DeepSpeed 'latest' names {tag!r}, which does not exist"
    if not any(step_dir.glob("*model_states.pt")):
        return f"{tag}/ has no model states"
    ranks = sorted(int(match.group(1)) for path in step_dir.iterdir() if (match := _OPTIMIZER_SHARD.search(path.name)))
    if ranks and ranks != list(range(len(ranks))):
        first_missing = next(rank for rank in range(len(ranks) + 1) if rank not in ranks)
        return f"{tag}/ lacks the optimizer shard of rank {first_missing}"
    return None


def _file_problem(path: Path) -> str | None:
    """A torch/numpy archive without its central directory, or safetensors shorter or longer than its header."""
    if path.suffix in _ZIP_SUFFIXES:
        try:
            zipfile.ZipFile(path).close()
        except (zipfile.BadZipFile, EOFError):
            return "is cut short (not a whole archive)"
    elif path.suffix == ".safetensors":
        return _safetensors_problem(path)
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        header_length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if header_length < 0 or 8 + header_length > size:
            return f"is cut short ({size} bytes, not even its header)"
        try:
            header = json.loads(handle.read(header_length))
            data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            return "has an unreadable header"
    expected = 8 + header_length + data_end
    return None if expected == size else f"is {size} bytes, its header says {expected}"


def _checkpoints(checkpoint_dir: Path) -> list[Path]:
    if not checkpoint_dir.is_dir():
        return []
    return [path for path in checkpoint_dir.iterdir() if path.is_dir() and _CHECKPOINT_NAME.match(path.name)]


def _step(checkpoint: Path) -> int:
    return int(_CHECKPOINT_NAME.match(checkpoint.name).group(1))


def _set_aside(checkpoint: Path) -> Path:
    """Move a broken checkpoint under `.incomplete/` (kept for inspection; a name taken twice gets a suffix)."""
    bin_dir = checkpoint.parent / INCOMPLETE_DIR
    bin_dir.mkdir(exist_ok=True)
    target, attempt = bin_dir / checkpoint.name, 1
    while target.exists():
        attempt += 1
        target = bin_dir / f"{checkpoint.name}.{attempt}"
    checkpoint.rename(target)
    return target
