"""Speed on a real model, SmolLM2-135M-Instruct: gradus's `grpo` and `eval` stages against plain TRL and plain
`model.generate` on the same model, prompts and settings, as ratios measured in one run (above 1: gradus faster).

    python -m bench.real_model_speed                        # both comparisons, 2 repeats each
    python -m bench.real_model_speed --only eval --repeats 3

* grpo: `bench.grpo_overhead.compare` with the real model: the stage through `gradus run` against a bare
  `GRPOTrainer` script, alternating, each figure from the trainer's own `train()` metrics (start-up excluded).
* eval: the eval stage through `gradus run` (its `generation` metrics: generated tokens up to each end of turn,
  and the seconds `generate` took) against a bare loop of `model.generate` over the same chat prompts, with the
  same batch size, token limit and greedy decoding, in its own process with the same thread count.

The model is the GGUF file converted once into `--model-dir` (as the runner converts it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.grpo_overhead import Setup, compare, grpo_args, same_threads_for_both_arms
from bench.gpu.processes import run_bounded

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = {"recipe": "synthetic_arithmetic", "levels": [1, 2, 3], "wording": "question", "format": "conversational"}
EVAL_DATA = {**QUESTIONS, "split": "test", "per_level": 32}
EVAL_ARGS = {"max_new_tokens": 96, "batch_size": 32}


def converted_model(model_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a model directory, converted from its GGUF file once."""
    from pipeline.base_models import known_model_path
    from pipeline.manifest import GGUFModelSpec
    from pipeline.plan import base_identity
    from stages.models import make_base_model

    if not (model_dir / "config.json").is_file():
        make_base_model(base_identity(GGUFModelSpec(gguf=known_model_path("smollm2-135m-instruct")), seed=0), model_dir)
    return model_dir


def eval_stage(work: Path, model: Path, first: bool) -> dict[str, float]:
    """One `gradus run` of a single eval stage; its generation figures."""
    manifest = {"run_dir": str(work / "run"), "base_model": str(model),
                "stages": [{"name": "eval", "kind": "eval", "data": EVAL_DATA, "args": EVAL_ARGS}]}
    path = work / "eval.yaml"
    path.write_text(yaml.safe_dump(manifest))
    command = [sys.executable, "-m", "pipeline.cli", "run", str(path)] + ([] if first else ["--from", "eval"])
    run_bounded(command, 3600, work / "stage.log", cwd=REPO)
    return json.loads((work / "run" / "eval" / "metrics.json").read_text())["generation"]


def bare_generate(model_dir: Path) -> dict[str, float]:
    """What a plain script does: render each chat prompt with the template, left-pad, `model.generate` greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data_recipes.synthetic import SyntheticOptions, generate

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    rows = generate(SyntheticOptions(**{key: value for key, value in EVAL_DATA.items() if key != "recipe"}))
    texts = [tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) for row in rows]
    eos, tokens = model.generation_config.eos_token_id, 0
    started = time.perf_counter()
    for begin in range(0, len(texts), EVAL_ARGS["batch_size"]):
        inputs = tokenizer(texts[begin : begin + EVAL_ARGS["batch_size"]], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=EVAL_ARGS["max_new_tokens"], do_sample=False)
        for row in output[:, inputs["input_ids"].shape[1] :].tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def compare_eval(model: Path, repeats: int) -> dict[str, Any]:
    """Alternate stage and bare runs; medians of tokens/s and the stage/bare ratio."""
    arms: dict[str, list[dict[str, float]]] = {"stage": [], "bare": []}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for repeat in range(repeats):
            arms["stage"].append(eval_stage(work, model, first=repeat == 0))
            out = work / "bare.json"
            subprocess.run([sys.executable, "-m", "bench.real_model_speed", "--bare-eval", str(model), str(out)], cwd=REPO, check=True)
            arms["bare"].append(json.loads(out.read_text()))
            print(f"eval repeat {repeat + 1}: stage {arms['stage'][-1]['tokens_per_s']:.1f} tokens/s, bare {arms['bare'][-1]['tokens_per_s']:.1f}", flush=True)
    medians = {arm: statistics.median(run["tokens_per_s"] for run in runs) for arm, runs in arms.items()}
    return {"runs": arms, "median_tokens_per_s": medians, "ratio": medians["stage"] / medians["bare"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["grpo", "eval"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model-dir", default="/tmp/gradus_smollm2_model")
    parser.add_argument("--out", default=str(REPO / "bench" / "real_model_speed.json"))
    parser.add_argument("--bare-eval", nargs=2, metavar=("MODEL_DIR", "OUT"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.bare_eval:
        Path(options.bare_eval[1]).write_text(json.dumps(bare_generate(Path(options.bare_eval[0]))))
        return
    same_threads_for_both_arms()
    model = converted_model(Path(options.model_dir))
    out = Path(options.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if options.only in (None, "eval"):
        results["eval"] = compare_eval(model, options.repeats)
        print(f"eval: stage/bare generated tokens/s {results['eval']['ratio']:.3f}", flush=True)
    if options.only in (None, "grpo"):
        # 2 prompts x 8 completions of up to 48 tokens a step: the real model at tens of seconds a step here.
        setup = Setup(base_model=str(model), data={**QUESTIONS, "split": "train", "num_examples": 500, "seed": 1},
                      args=grpo_args(options.steps, use_cpu=True, per_device_train_batch_size=16))
        with tempfile.TemporaryDirectory() as scratch:
            results["grpo"] = compare(setup, Path(scratch), options.repeats, deadline=float("inf"))
        if "error" in results["grpo"]:
            sys.exit(f"real_model_speed: {results['grpo']['error']}")
        print(f"grpo: stage/bare trained tokens/s {results['grpo']['ratio']['trained_tokens_per_s']:.3f}, "
              f"generated {results['grpo']['ratio']['generated_tokens_per_s']:.3f}", flush=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
