import asyncio
import inspect
import logging
from pathlib import Path

import pytest

from rewards import RewardError, RewardSpecError, build, check, required_columns, resolve
from rewards.shaping import OverlongPenalty


def test_builtin_by_name_with_options() -> None:
    assert resolve("overlong") is resolve("length") is OverlongPenalty
    check("length", {"max_tokens": 10, "cache_tokens": 4}, columns={"prompt"})
    reward = build("length", {"max_tokens": 10, "cache_tokens": 4})
    assert reward.__name__ == "length"
    assert reward(["?", "?"], ["short", "long"], completion_ids=[[1] * 6, [1] * 8]) == [0.0, -0.5]


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(RewardSpecError, match=r"unknown reward 'math_acuracy' \(did you mean 'math_accuracy'\?\)") as error:
        resolve("math_acuracy")
    assert "\n" not in str(error.value)
    with pytest.raises(RewardSpecError, match=r"did you mean 'my_pkg.rewards:score'"):
        resolve("my_pkg.rewards.score")


def test_unknown_option_is_named_with_a_suggestion() -> None:
    with pytest.raises(RewardSpecError, match=r"no option 'max_token' \(did you mean 'max_tokens'\?\)"):
        check("length", {"max_token": 10}, columns=set())
    with pytest.raises(RewardSpecError, match=r"needs option 'max_tokens'"):
        check("length", {}, columns=set())


def test_missing_column_is_named_with_the_available_ones() -> None:
    with pytest.raises(RewardSpecError, match=r"needs dataset column 'answer'.*available columns: problem, solution"):
        check("math_accuracy", {}, columns={"problem", "solution"})
    check("math_accuracy", {"timeout_seconds": 3}, columns={"problem", "answer"})


def test_option_values_are_checked_when_built_and_for_built_ins_at_plan_time() -> None:
    with pytest.raises(RewardSpecError, match=r"reward 'repetition': ValueError: max_penalty must be <= 0"):
        build("repetition", {"max_penalty": 0.5})
    with pytest.raises(RewardSpecError, match=r"reward 'math_accuracy': ValueError: reasoning_tags must be"):
        check("math_accuracy", {"reasoning_tags": "think"}, columns={"answer"})


def test_module_function_path(plugins_on_path: Path) -> None:
    name = "reward_plugins:keyword_reward"
    assert required_columns(resolve(name)) == {"keyword"}
    with pytest.raises(RewardSpecError, match=r"needs dataset column 'keyword'"):
        check(name, {}, columns={"prompt"})
    with pytest.raises(RewardSpecError, match=r"is a reward function, not a factory, and takes no options"):
        check(name, {"weight": 2}, columns={"keyword"})
    reward = build(name, {})
    assert reward.__name__ == name
    assert required_columns(reward) == {"keyword"}
    assert reward(["?", "?"], ["a cat", "a dog"], keyword=["cat", "cat"]) == [1.0, 0.0]


def test_class_factory_path_is_checked_without_being_built(plugins_on_path: Path) -> None:
    name = "reward_plugins:Threshold"
    with pytest.raises(RewardSpecError, match=r"needs dataset column 'weight'"):
        check(name, {"minimum_chars": 3}, columns={"prompt"})
    with pytest.raises(RewardSpecError, match=r"no option 'minimum_char' \(did you mean 'minimum_chars'\?\)"):
        check(name, {"minimum_char": 3}, columns={"weight"})
    reward = build(name, {"minimum_chars": 3})
    assert reward(["?", "?"], ["ab", "abc"], weight=[2.0, 2.0]) == [0.0, 2.0]


def test_bad_module_paths_are_one_line_errors(plugins_on_path: Path) -> None:
    with pytest.raises(RewardSpecError, match=r"cannot import module 'no_such_module' \(ModuleNotFoundError"):
        resolve("no_such_module:reward")
    with pytest.raises(RewardSpecError, match=r"has no attribute 'shout_rewards' \(did you mean 'shout_reward'\?\)"):
        resolve("reward_plugins:shout_rewards")


def test_trl_reward_functions_work_unchanged() -> None:
    accuracy = build("trl.rewards:accuracy_reward", {})
    assert required_columns(accuracy) == {"solution"}
    completions = [[{"role": "assistant", "content": r"\boxed{\frac{1}{3}}"}], [{"role": "assistant", "content": r"\boxed{2}"}]]
    assert accuracy(["?", "?"], completions, solution=[r"\frac{1}{3}", r"\frac{1}{3}"]) == [1.0, 0.0]
    overlong = build("trl.rewards:get_soft_overlong_punishment", {"max_completion_len": 10, "soft_punish_cache": 4})
    assert overlong(["?"], ["text"], completion_ids=[[1] * 8]) == [-0.5]


def test_a_failing_row_scores_none_is_counted_and_logged_once(
    plugins_on_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reward = build("reward_plugins:fails_on_boom", {})
    with caplog.at_level(logging.WARNING, logger="rewards.registry"):
        assert reward(["?"] * 3, ["fine", "boom " + "x" * 1000, "fine"]) == [1.0, None, 1.0]
        assert reward(["?"] * 2, ["boom " + "x" * 1000, "fine"]) == [None, 1.0]
    assert reward.errors == 2
    row_messages = [record.getMessage() for record in caplog.records if "on completion" in record.getMessage()]
    assert len(row_messages) == 1
    assert "ValueError: cannot score 'boom'" in row_messages[0]
    assert "boom xxx" in row_messages[0] and "chars)" in row_messages[0]  # the completion, truncated


def test_a_batch_where_every_row_fails_raises_naming_the_plugin(plugins_on_path: Path) -> None:
    reward = build("reward_plugins:always_fails", {})
    with pytest.raises(RewardError, match=r"reward 'reward_plugins:always_fails' failed on all 2 rows.*ZeroDivisionError"):
        reward(["?", "?"], ["a", "b"])
    assert reward.errors == 2


def test_async_reward_functions_stay_async_and_guarded(plugins_on_path: Path) -> None:
    reward = build("reward_plugins:async_fails_on_boom", {})
    assert inspect.iscoroutinefunction(type(reward).__call__)  # what TRL checks to await it with the others
    assert asyncio.run(reward(["?", "?"], ["boom", "fine"])) == [None, 1.0]
    assert reward.errors == 1


def test_entry_point_plugin(plugins_on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution that declares `[gradus.rewards]` entry points, installed by writing its dist-info."""
    dist_info = tmp_path / "gradus_test_plugins-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: gradus-test-plugins\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[gradus.rewards]\nshout = reward_plugins:shout_reward\nlong_enough = reward_plugins:Threshold\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    from reward_plugins import shout_reward

    assert resolve("shout") is shout_reward
    assert build("shout", {})(["?", "?"], ["HEY", "hey"]) == [1.0, 0.0]
    check("long_enough", {"minimum_chars": 2}, columns={"weight"})
    with pytest.raises(RewardSpecError, match=r"did you mean 'shout'\?"):
        resolve("shuot")
