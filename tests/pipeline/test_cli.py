"""What the CLI prints of an error is the error's own text: rich markup must not eat bracketed words."""

from __future__ import annotations

from pipeline.cli import main
from tests.conftest import tiny_manifest, write_manifest


def test_an_error_with_brackets_reaches_the_terminal_unchanged(tmp_path, capsys):
    manifest = tiny_manifest(tmp_path / "run")
    manifest["stages"][1]["model"] = "sft[tensorboard]"  # as in a hint such as pip install -e ".[tensorboard]"
    assert main(["plan", str(write_manifest(tmp_path / "m.yaml", manifest))]) == 2
    printed = capsys.readouterr().out
    assert "gradus: error: stage 'eval': field 'model': no stage named 'sft[tensorboard]'" in printed, printed
