"""`replay: {stage, fraction}`: resolved at plan time into the stage file, drawn reproducibly by the
seed, recorded in the metrics, and refused at plan time where there is nothing to replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.manifest import ManifestError, load_manifest
from pipeline.plan import make_plan
from data_recipes.replay import replay_rows
from stages import common
from tests.conftest import tiny_manifest, write_manifest

SOURCE = {"recipe": "synthetic_arithmetic", "levels": [1, 2], "num_examples": 200}


def replay_manifest(tmp_path: Path, replay: dict, seed: int = 0, **later: object) -> dict:
    """The tiny SFT (levels 1-2), then a second SFT on level 3 with `replay` in its data."""
    manifest = tiny_manifest(tmp_path / "run")
    manifest["seed"] = seed
    manifest["stages"][0]["data"] = SOURCE
    manifest["stages"].append({"name": "later", "kind": "sft", "model": "sft", "args": {"max_steps": 2},
                               "data": {"recipe": "synthetic_arithmetic", "levels": [3], "num_examples": 90, "replay": replay}, **later})
    return manifest


def plan_for(tmp_path: Path, manifest: dict):
    return make_plan(load_manifest(write_manifest(tmp_path / "m.yaml", manifest)))


def test_the_same_seed_draws_the_same_rows_and_another_seed_others():
    drawn = replay_rows(90, 200, 0.1, seed=0)
    assert len(drawn) == 10 == len(set(drawn)) and all(0 <= row < 200 for row in drawn)  # 10 of 100 rows: a tenth
    assert replay_rows(90, 200, 0.1, seed=0) == drawn
    assert replay_rows(90, 200, 0.1, seed=1) != drawn
    with pytest.raises(RuntimeError, match="needs 100 replayed rows; the replayed stage's data has 50"):
        replay_rows(100, 50, 0.5, seed=0)


def training_rows(tmp_path: Path, seed: int) -> tuple[list[dict], dict]:
    """What the later stage trains on, and its metrics, as its process would compute them."""
    where = tmp_path / f"seed{seed}"
    where.mkdir(parents=True)
    stage = plan_for(where, replay_manifest(where, {"stage": "sft", "fraction": 0.1}, seed)).stages[-1].resolved
    rows = common.load_training_data(stage).to_list()
    common.finish(stage, {"global_step": 2})
    return rows, json.loads((stage.stage_dir / "metrics.json").read_text())


def test_the_stage_trains_on_its_rows_and_a_seeded_draw_of_the_replayed_stages(tmp_path):
    import data_recipes

    rows, metrics = training_rows(tmp_path, seed=0)
    source = data_recipes.load(SOURCE["recipe"], {key: value for key, value in SOURCE.items() if key != "recipe"}).to_list()
    own, replayed = rows[:90], rows[90:]
    assert {row["level"] for row in own} == {3} and len(replayed) == 10
    assert replayed == [{key: source[index][key] for key in replayed[0]} for index in replay_rows(90, 200, 0.1, seed=0)]
    assert metrics["global_step"] == 2
    assert metrics["replay"] == {"stage": "sft", "fraction": 0.1, "own_rows": 90, "replayed_rows": 10, "source_rows": 200, "seed": 0}
    again, _ = training_rows(tmp_path / "again", seed=0)
    other, _ = training_rows(tmp_path, seed=1)
    assert again == rows and other[90:] != replayed


def test_the_stage_file_carries_the_replayed_data_and_the_fraction_enters_the_fingerprint(tmp_path):
    plan = plan_for(tmp_path, replay_manifest(tmp_path, {"stage": "sft", "fraction": 0.1}))
    later = plan.stages[-1]
    assert later.resolved.data.replay.data.model_dump() == SOURCE
    assert later.depends_on == ["sft"] and later.resolved.data.options == {"levels": [3], "num_examples": 90}
    other = plan_for(tmp_path, replay_manifest(tmp_path, {"stage": "sft", "fraction": 0.2})).stages[-1]
    assert other.fingerprint != later.fingerprint and plan_for(tmp_path, tiny_manifest(tmp_path / "run")).stages[0].resolved.data.replay is None


@pytest.mark.parametrize(("replay", "later", "expected"), [
    ({"stage": "sft", "fraction": 0.0}, {}, "field 'data.replay.fraction': the share of the stage's rows drawn from the earlier stage, strictly between 0 and 1 (got 0.0)"),
    ({"stage": "sft", "fraction": 1.5}, {}, "field 'data.replay.fraction': the share"),
    ({"stage": "eval", "fraction": 0.1}, {}, "field 'data.replay.stage': stage 'eval' is a eval stage with no training data to replay (it trains on nothing)"),
    ({"stage": "sfft", "fraction": 0.1}, {}, "field 'data.replay.stage': no earlier stage named 'sfft' (did you mean 'sft'?); stages with training data: sft"),
    ({"stage": "sft", "fraction": 0.1}, {"kind": "eval", "args": {}}, "field 'data.replay': replay mixes earlier training data into the data a training stage trains on"),
    ({"stage": "sft", "fraction": 0.1, "data": SOURCE}, {}, "field 'data.replay.data': set by gradus"),
])
def test_plan_time_errors_name_the_field(tmp_path, replay, later, expected):
    with pytest.raises(ManifestError) as caught:
        load_manifest(write_manifest(tmp_path / "m.yaml", replay_manifest(tmp_path, replay, **later)))
    message = str(caught.value)
    assert message.startswith("stage 'later': ") and expected in message and "\n" not in message


def test_replayed_data_must_share_the_columns_the_stage_needs(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "2"}]}) + "\n")
    manifest = replay_manifest(tmp_path, {"stage": "sft", "fraction": 0.1})
    manifest["stages"][0]["data"] = {"recipe": "jsonl", "path": str(chat)}
    with pytest.raises(ManifestError, match="stage 'later': field 'data.replay': the data of stage 'sft' and of this stage share no column"):
        load_manifest(write_manifest(tmp_path / "m.yaml", manifest))
