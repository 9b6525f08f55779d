"""When does distillation pay? GRPO against on-policy and sequence-level distillation, from one student start.

    python -m bench.distill                        # everything, resuming from what bench/distill_results/ holds
    python -m bench.distill --arms grpo reverse_kl --seeds 0   # a slice

From the repository root. Each step is cached, so an interrupted bench resumes:

1. **The teacher and the student start**, made once by one `gradus run` (`setup` below) and copied to
   `bench/distill_results/{teacher,student_start}/` (committed: another CPU trains other weights from the same
   manifest, so a later session adds runs only from the committed models):
   - teacher: the quickstart's `grpo` stage (100 steps, the `lp` curriculum) on the committed quickstart SFT
     model (`bench/curriculum_results/sft_start`, 1.06 M parameters): the quickstart's own GRPO model;
   - student: a tiny model at about a quarter of the parameters (`STUDENT`), the quickstart's `sft` stage
     (500 steps on levels 1-6) from random init;
   - the offline distillation set: a `difficulty` stage samples the teacher 4 times on 1,600 train prompts
     (6,400 completions, as many as GRPO generates in 100 steps), scored by `math_accuracy`.
2. **Arms**, one `gradus run` each per seed, `STEPS` student steps from the student start, a checkpoint every
   `EVAL_EVERY`:
   | arm         | stage                                                                      |
   |-------------|----------------------------------------------------------------------------|
   | grpo        | the quickstart's grpo args (8 prompts x 8 completions, lr 3e-5, DAPO), lp curriculum |
   | reverse_kl  | distill, beta 1 (TRL's default), 64 prompts a step, lr 1e-4               |
   | forward_kl  | distill, beta 0                                                            |
   | seq_kd      | sft on the offline set's accepted teacher samples, batch 64, lr 2e-3 (the quickstart's SFT rate) |
   | reverse_kl_lp | reverse_kl with the `lp` curriculum over levels, the student's on-policy pass rate its signal |
   | seq_kd_long, reverse_kl_long | the teacher-hacking question: 480 steps (about six passes over the offline set), a checkpoint every 80 |
3. **Held-out accuracy**: greedy, `math_accuracy`, 300 test problems (levels 1-6 x 50), at the start and at
   every checkpoint (`bench.curriculum.Evaluator`).

Compute, counted per step from TRL's logged token counts (`num_tokens`: prompt and completion tokens of the
step's sequences) with the usual approximations, 2 N FLOPs a token for a forward pass and 6 N for forward and
backward (N: parameters without embeddings' lookups; attention's own term is left out, sequences are < 150
tokens): student, generation (2 N_s, GRPO and distill) plus training (6 N_s); teacher, its forward pass over
each distill sequence (2 N_t), and for seq_kd its sampling of the offline set (2 N_t per token of each sample's
prompt and completion, counted with the tokenizer), charged up front. Making the teacher (its SFT and GRPO on a
model four times the student's size) is counted by no arm: the question is what a teacher one already has costs.

Each finished run becomes `bench/distill_results/<start>/runs/<arm>_seed<n>.json` (held-out curve and per-step
logs), small enough to commit; its checkpoints are then deleted. The summary (`table.md`, `distill.json`,
`distill.png`, `teacher_hacking.png`) is rebuilt from whatever runs exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.curriculum import COMMITTED_START, Evaluator, gradus_run, key_of, quickstart_stage, write_json

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "distill_results"
STEPS, EVAL_EVERY = 120, 20
LONG_STEPS, LONG_EVAL_EVERY = 480, 80  # the teacher-hacking arms: about six passes over the offline set
STUDENT = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4}
POOL = {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3, 4, 5, 6], "num_examples": 5000, "seed": 1}
OFFLINE_PROMPTS = {"recipe": "synthetic_arithmetic", "split": "train", "levels": [1, 2, 3, 4, 5, 6], "num_examples": 1600, "seed": 7}
MAX_COMPLETION = 96


@dataclass(frozen=True)
class Arm:
    kind: str
    args: dict[str, Any]
    curriculum: dict[str, Any] | None = None
    steps: int = STEPS
    eval_every: int = EVAL_EVERY

    @property
    def checkpoints(self) -> list[int]:
        return list(range(self.eval_every, self.steps + 1, self.eval_every))


def _grpo_args() -> dict[str, Any]:
    return quickstart_stage("grpo")["args"]


DISTILL_ARGS = {"learning_rate": 1e-4, "lr_scheduler_type": "constant", "per_device_train_batch_size": 64, "temperature": 1.0,
                "max_completion_length": MAX_COMPLETION, "gradient_checkpointing": False}
LP = {"strategy": "lp", "difficulty_column": "level"}
ARMS = {
    "grpo": Arm("grpo", {**_grpo_args()}, curriculum=LP),
    "reverse_kl": Arm("distill", {**DISTILL_ARGS, "beta": 1.0}),
    "forward_kl": Arm("distill", {**DISTILL_ARGS, "beta": 0.0}),
    "seq_kd": Arm("sft", {"learning_rate": 2e-3, "lr_scheduler_type": "constant", "per_device_train_batch_size": 64, "max_length": 128,
                          "gradient_checkpointing": False}),
    "reverse_kl_lp": Arm("distill", {**DISTILL_ARGS, "beta": 1.0}, curriculum=LP),
}
SEQ_KD_ARGS = ARMS["seq_kd"].args
# Teacher hacking (Tiapkin et al. 2025): offline, the student keeps fitting a fixed set of teacher samples; online it never
# sees the same sample twice. Four times as long, so the offline arm goes over its set about six times.
ARMS |= {
    "seq_kd_long": Arm("sft", SEQ_KD_ARGS, steps=LONG_STEPS, eval_every=LONG_EVAL_EVERY),
    "reverse_kl_long": Arm("distill", {**DISTILL_ARGS, "beta": 1.0}, steps=LONG_STEPS, eval_every=LONG_EVAL_EVERY),
}
MAIN_ARMS = [name for name, arm in ARMS.items() if arm.steps == STEPS]


def sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def parameters(model_dir: Path) -> int:
    """Parameters a token's matrix products touch: all but the input embedding (tied to the output head here,
    so the head is counted once)."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        return sum(int(np.prod(weights.get_slice(name).get_shape())) for name in weights.keys())


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.work = Path(options.work_dir)
        self.teacher, self.student, self.offline = self.setup()
        self.start_hash = key_of([sha16(self.teacher / "model.safetensors"), sha16(self.student / "model.safetensors")])
        self.runs = OUT / f"start_{self.start_hash}" / "runs"
        self.evaluator = Evaluator("balanced", str(self.student))

    def setup(self) -> tuple[Path, Path, Path]:
        """The committed teacher and student start, and the offline set (made with them, so it is cached too)."""
        teacher, student, offline = OUT / "teacher", OUT / "student_start", OUT / "offline_set.jsonl"
        if (teacher / "model.safetensors").is_file() and (student / "model.safetensors").is_file() and offline.is_file():
            return teacher, student, offline
        quickstart_sft = quickstart_stage("sft")
        stages = [
            {**quickstart_stage("grpo"), "name": "teacher", "model": "base"},
            {**quickstart_sft, "name": "student", "model": {"tiny": STUDENT}},
            {"name": "offline", "kind": "difficulty", "model": "teacher", "data": OFFLINE_PROMPTS,
             "rewards": [{"name": "math_accuracy"}], "args": {"num_samples": 4, "temperature": 1.0, "max_new_tokens": MAX_COMPLETION}},
        ]
        run_dir = self.work / "setup"
        print(f"making the teacher, the student start and the offline set in {run_dir}", flush=True)
        gradus_run({"run_dir": str(run_dir), "seed": 0, "base_model": str(COMMITTED_START), "decontamination": {"enabled": False},
                    "stages": stages}, run_dir / "manifest.yaml")
        for name, target in (("teacher", teacher), ("student", student)):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(run_dir / name / "model", target, ignore=shutil.ignore_patterns("training_args.bin"))
        import datasets

        rows = datasets.load_from_disk(str(run_dir / "offline" / "dataset"))
        with offline.open("w") as out:
            for row in rows:
                out.write(json.dumps({key: row[key] for key in ("prompt", "answer", "level", "samples", "scores")}) + "\n")
        write_json(OUT / "setup.json", {"offline_metrics": json.loads((run_dir / "offline" / "metrics.json").read_text())})
        return teacher, student, offline

    @functools.cached_property
    def offline_sft_rows(self) -> Path:
        """The offline set as SFT rows: every accepted (correct) teacher completion, distinct per prompt."""
        path = self.work / "offline_sft.jsonl"
        rows = []
        for line in self.offline.open():
            row = json.loads(line)
            kept = dict.fromkeys(sample for sample, score in zip(row["samples"], row["scores"]) if score is not None and score >= 1.0)
            rows += [{"prompt": row["prompt"], "completion": sample, "answer": row["answer"], "level": row["level"]} for sample in kept]
        text = "".join(json.dumps(row) + "\n" for row in rows)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return path

    @functools.cached_property
    def offline_tokens(self) -> float:
        """Tokens of the teacher's sampling of the offline set: each sample's prompt and completion (+ its end)."""
        from stages import common

        tokenizer = common.load_tokenizer(str(self.teacher))
        rows = [json.loads(line) for line in self.offline.open()]
        texts = [row["prompt"] + sample for row in rows for sample in row["samples"]]
        return float(sum(len(ids) + 1 for ids in tokenizer(texts)["input_ids"]))

    def manifest(self, arm_name: str, seed: int) -> dict[str, Any]:
        arm = ARMS[arm_name]
        args = {**arm.args, "max_steps": arm.steps, "save_steps": arm.eval_every, "save_total_limit": None, "logging_steps": 1, "report_to": "none"}
        stage: dict[str, Any] = {"name": "train", "kind": arm.kind, "model": "base", "args": args}
        if arm.kind == "sft":
            stage["data"] = {"recipe": "jsonl", "path": str(self.offline_sft_rows)}
        else:
            stage["data"] = POOL
            stage["rewards"] = [{"name": "math_accuracy"}]
        if arm.kind == "distill":
            stage["teacher"] = str(self.teacher)
        if arm.curriculum is not None:
            stage["curriculum"] = arm.curriculum
        return {"run_dir": str(self.work / "runs" / f"{arm_name}_seed{seed}"), "seed": seed, "base_model": str(self.student),
                "decontamination": {"enabled": False}, "stages": [stage]}

    def key(self, arm_name: str, seed: int) -> str:
        """A run's cache key: what its figures depend on (the arm, the seed, the committed models, the data), no
        paths, so a run cached in another checkout or work directory counts."""
        data = {"offline_sft_rows": sha16(self.offline_sft_rows)} if ARMS[arm_name].kind == "sft" else POOL
        return key_of({"arm": dataclasses.asdict(ARMS[arm_name]), "seed": seed, "start": self.start_hash, "data": data})

    def run(self, arm_name: str, seed: int) -> dict[str, Any]:
        manifest = self.manifest(arm_name, seed)
        key = self.key(arm_name, seed)
        path = self.runs / f"{arm_name}_seed{seed}.json"
        if path.is_file() and json.loads(path.read_text())["key"] == key:
            return json.loads(path.read_text())
        run_dir = Path(manifest["run_dir"])
        print(f"[{arm_name} seed {seed}] training", flush=True)
        wall = gradus_run(manifest, run_dir / "manifest.yaml")
        checkpoints = run_dir / "train" / "checkpoints"
        arm = ARMS[arm_name]
        history = json.loads((checkpoints / f"checkpoint-{arm.steps}" / "trainer_state.json").read_text())["log_history"]
        print(f"[{arm_name} seed {seed}] held-out accuracy of {len(arm.checkpoints)} checkpoints", flush=True)
        result = {
            "key": key, "arm": arm_name, "seed": seed, "wall_seconds": round(wall, 1),
            "held_out": {str(step): self.evaluator(checkpoints / f"checkpoint-{step}") for step in arm.checkpoints},
            "steps": [{name: entry.get(name) for name in ("step", "loss", "reward", "num_tokens", "completions/mean_length",
                                                         "completions/clipped_ratio", "step_time")} for entry in history if "loss" in entry],
        }
        write_json(path, result)
        shutil.rmtree(checkpoints)
        return result

    def start_accuracy(self) -> dict[str, dict[str, float]]:
        path = OUT / f"start_{self.start_hash}" / "start.json"
        if path.is_file():
            return json.loads(path.read_text())
        accuracy = {"student": self.evaluator(self.student), "teacher": self.evaluator(self.teacher)}
        write_json(path, accuracy)
        return accuracy


# -- compute ----------------------------------------------------------------------------------------


def step_tokens(run: dict[str, Any]) -> list[float]:
    """Tokens each step's sequences held (TRL logs `num_tokens` cumulatively)."""
    seen = [entry["num_tokens"] or 0.0 for entry in run["steps"]]
    return list(np.diff([0.0, *seen]))


def flops(run: dict[str, Any], student_params: int, teacher_params: int, offline_tokens: float) -> tuple[list[float], list[float]]:
    """Cumulative (student, teacher) FLOPs after each step (see the module docstring)."""
    tokens = np.array(step_tokens(run))
    arm = ARMS[run["arm"]]
    student = tokens * student_params * (6 if arm.kind == "sft" else 8)  # sft samples nothing
    teacher = tokens * teacher_params * 2 if arm.kind == "distill" else np.zeros_like(tokens)
    teacher_total = np.cumsum(teacher) + (2 * teacher_params * offline_tokens if arm.kind == "sft" else 0.0)
    return list(np.cumsum(student)), list(teacher_total)


def summarise(bench: Bench, results: list[dict[str, Any]]) -> dict[str, Any]:
    start = bench.start_accuracy()
    student_params, teacher_params = parameters(bench.student), parameters(bench.teacher)
    offline_tokens = bench.offline_tokens
    arms: dict[str, Any] = {}
    for arm in ARMS:
        runs = sorted((run for run in results if run["arm"] == arm), key=lambda run: run["seed"])
        if not runs:
            continue
        checkpoints = ARMS[arm].checkpoints
        curves = np.array([[start["student"]["mean"], *(run["held_out"][str(step)]["mean"] for step in checkpoints)] for run in runs])
        levels = {level: float(np.mean([run["held_out"][str(checkpoints[-1])][level] for run in runs])) for level in map(str, range(1, 7))}
        student_flops, teacher_flops = zip(*(flops(run, student_params, teacher_params, offline_tokens) for run in runs))
        arms[arm] = {"seeds": [run["seed"] for run in runs], "points": [0, *checkpoints], "curve_mean": list(curves.mean(0)), "curve_std": list(curves.std(0, ddof=1)) if len(runs) > 1 else None,
                     "curves": curves.tolist(), "final_by_level": levels,
                     "student_flops": float(np.mean([values[-1] for values in student_flops])),
                     "teacher_flops": float(np.mean([values[-1] for values in teacher_flops])),
                     "per_run_flops": [(list(s), list(t)) for s, t in zip(student_flops, teacher_flops)],
                     "upfront_flops": 2.0 * teacher_params * offline_tokens if ARMS[arm].kind == "sft" else 0.0,
                     "wall_seconds": float(np.mean([run["wall_seconds"] for run in runs])),
                     "loss": [[entry["loss"] for entry in run["steps"]] for run in runs]}
    if "grpo" in arms:
        # The cost of reaching GRPO's final (seed-mean) accuracy, per seed, as a ratio to GRPO's whole run: at the
        # first checkpoint at or above it (no interpolation between checkpoints), for the arms evaluated on GRPO's grid.
        target, grpo_student = arms["grpo"]["curve_mean"][-1], arms["grpo"]["student_flops"]
        for arm in (arm for arm in MAIN_ARMS if arm in arms):
            summary = arms[arm]
            ratios = []
            for curve, (student_curve, teacher_curve) in zip(summary["curves"], summary["per_run_flops"]):
                step = next((point for point, accuracy in zip(summary["points"][1:], curve[1:]) if accuracy >= target), None)
                ratios.append(None if step is None else {"step": step, "student": student_curve[step - 1] / grpo_student,
                                                         "with_teacher": (student_curve[step - 1] + teacher_curve[step - 1]) / grpo_student})
            summary["to_grpo_final"] = ratios
    return {"start": start, "parameters": {"student": student_params, "teacher": teacher_params}, "grpo_final": arms.get("grpo", {}).get("curve_mean", [None])[-1],
            "offline_tokens": offline_tokens, "arms": arms}


def markdown(summary: dict[str, Any]) -> str:
    """One table per run length: the main arms (GRPO's budget), then the teacher-hacking arms."""
    lines = [f"Student {summary['parameters']['student']:,} parameters, teacher {summary['parameters']['teacher']:,}; held-out greedy pass@1 "
             f"(300 problems): student start {summary['start']['student']['mean']:.3f}, teacher {summary['start']['teacher']['mean']:.3f}."]
    for steps in sorted({len(values["points"]) and values["points"][-1] for values in summary["arms"].values()}):
        group = {arm: values for arm, values in summary["arms"].items() if values["points"][-1] == steps}
        points = next(iter(group.values()))["points"][1:]
        lines += ["", "| arm | seeds | " + " | ".join(f"step {step}" for step in points) + " | L1-L6 at the end | student TFLOP | teacher TFLOP | "
                  "to GRPO's final: first checkpoint, student compute / GRPO's, with teacher's (per seed) |", "|---|---|" + "---:|" * (len(points) + 4)]
        for arm, values in group.items():
            std = values["curve_std"] or [0.0] * len(values["curve_mean"])
            reach = "; ".join("-" if ratio is None else f"{ratio['step']}, {ratio['student']:.2f}x, {ratio['with_teacher']:.2f}x"
                              for ratio in values.get("to_grpo_final", []))
            lines.append(f"| {arm} | {len(values['seeds'])} | " + " | ".join(f"{mean:.3f} ± {sd:.3f}" for mean, sd in zip(values["curve_mean"][1:], std[1:]))
                         + f" | {' '.join(f'{v:.2f}' for v in values['final_by_level'].values())} | {values['student_flops'] / 1e12:.1f} | "
                         f"{values['teacher_flops'] / 1e12:.1f} | {reach or '-'} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path, hacking_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_flops) = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm in MAIN_ARMS:
        if arm not in summary["arms"]:
            continue
        values = summary["arms"][arm]
        points, mean = values["points"], np.array(values["curve_mean"])
        line, = by_step.plot(points, mean, marker="o", label=arm)
        if values["curve_std"]:
            by_step.fill_between(points, mean - values["curve_std"], mean + values["curve_std"], color=line.get_color(), alpha=0.15)
        student, teacher = values["per_run_flops"][0]
        total = [values["upfront_flops"]] + [student[min(step, len(student)) - 1] + teacher[min(step, len(teacher)) - 1] for step in points[1:]]
        by_flops.plot(np.array(total) / 1e12, mean, marker="o", label=arm, color=line.get_color())
    for axis, label in ((by_step, "student training step"), (by_flops, "student + teacher TFLOP (the first seed's count)")):
        axis.axhline(summary["start"]["teacher"]["mean"], color="grey", linestyle="--", linewidth=1, label="teacher")
        axis.set_xlabel(label)
        axis.set_ylabel("held-out pass@1 (300 problems)")
        axis.grid(alpha=0.3)
    by_step.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    # Teacher hacking: does held-out accuracy stall while the distillation loss keeps falling (offline), or not (online)?
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, (offline, online) in zip(axes, (("seq_kd", "reverse_kl"), ("seq_kd_long", "reverse_kl_long"))):
        loss_axis = axis.twinx()
        loss_axis.set_ylabel("training loss / its first 5 steps' mean (thin lines)")
        for arm, colour in ((offline, "tab:red"), (online, "tab:blue")):
            if arm not in summary["arms"]:
                continue
            values = summary["arms"][arm]
            steps = values["points"][-1]
            loss = np.array([run[:steps] for run in values["loss"] if len(run) >= steps]).mean(0)
            loss_axis.plot(range(1, len(loss) + 1), loss / loss[:5].mean(), color=colour, alpha=0.35, linewidth=1)
            axis.plot(values["points"], values["curve_mean"], marker="o", color=colour,
                      label=f"{arm}: held-out pass@1" + (" (offline: SFT on fixed teacher samples)" if arm.startswith("seq_kd") else " (online)"))
        axis.set_xlabel("student step")
        axis.set_ylabel("held-out pass@1 (seed mean)")
        seeds = {arm: len(summary["arms"][arm]["seeds"]) for arm in (offline, online) if arm in summary["arms"]}
        axis.set_title(", ".join(f"{arm}: {count} seed{'s' if count > 1 else ''}" for arm, count in seeds.items()), fontsize=9)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(hacking_path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="default: all, the teacher-hacking (long) arms last")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench_distill"))
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process (1: fastest on a shared 2-core machine)")
    parser.add_argument("--summary-only", action="store_true", help="rebuild the summary from the cached runs; train nothing")
    options = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(options.threads))
    bench = Bench(options)
    bench.start_accuracy()
    if options.summary_only:
        print(write_summary(bench), flush=True)
        return
    # Most telling first: seed 0 of every arm, then the other seeds.
    for seed in sorted(options.seeds, key=lambda seed: seed != options.seeds[0]):
        for arm in options.arms:
            bench.run(arm, seed)
            print(write_summary(bench), flush=True)


def write_summary(bench: Bench) -> str:
    """distill.json, table.md and the two plots from every cached run; the table's text."""
    summary = summarise(bench, [json.loads(path.read_text()) for path in sorted(bench.runs.glob("*_seed*.json"))])
    out = bench.runs.parent
    write_json(out / "distill.json", summary)
    table = markdown(summary)
    (out / "table.md").write_text(table)
    plot(summary, out / "distill.png", out / "teacher_hacking.png")
    return table

if __name__ == "__main__":
    main()
