"""`launch.atomic`: a file is replaced whole or not at all, durably, and a failed write leaves nothing behind."""

from __future__ import annotations

import os

import numpy as np
import pytest

from launch.atomic import replacing, write_atomically


def test_text_and_bytes_replace_the_old_content(tmp_path):
    target = tmp_path / "metrics.json"
    write_atomically(target, "old\n")
    write_atomically(target, b"\x00new")
    assert target.read_bytes() == b"\x00new"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "ledger.json"
    write_atomically(target, "whole\n")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with replacing(target) as temporary:
            temporary.write_text("ha")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "whole\n"
    assert os.listdir(tmp_path) == ["ledger.json"]


def test_a_writer_that_never_made_the_file_leaves_the_old_one(tmp_path):
    target = tmp_path / "state.npz"
    write_atomically(target, b"old")
    with pytest.raises(FileNotFoundError):
        with replacing(target):
            pass  # nothing written: there is nothing to rename, so the target must not be touched
    assert target.read_bytes() == b"old"


def test_a_writer_adding_its_own_extension_is_given_the_suffix(tmp_path):
    target = tmp_path / "sampler_state.npz"
    with replacing(target, suffix=".npz") as temporary:
        np.savez(temporary, counts=np.arange(3))  # np.savez appends .npz to a name without it
    with np.load(target) as state:
        assert state["counts"].tolist() == [0, 1, 2]
    assert os.listdir(tmp_path) == ["sampler_state.npz"]


def test_the_content_and_the_rename_are_synced(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: (synced.append(os.readlink(f"/proc/self/fd/{descriptor}")), real_fsync(descriptor)))
    write_atomically(tmp_path / "done.json", "{}")
    assert synced == [str(tmp_path / f".done.json.{os.getpid()}.tmp"), str(tmp_path)]
