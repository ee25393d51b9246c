"""The files `arbiter up` leaves for the CLI: read only when they are the user's own and private;
the data folder private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from arbiter.stack import ENV_FILE, make_data_dir, read_env_file

URL = "postgresql+psycopg://arbiter:secret@127.0.0.1:5999/arbiter"


def env_file(folder: Path, mode: int) -> Path:
    path = folder / ENV_FILE
    path.write_text(f"ARBITER_DATABASE_URL={URL}\n")
    path.chmod(mode)
    return path


def test_a_private_env_file_of_our_own_is_read(tmp_path: Path) -> None:
    env_file(tmp_path, 0o600)
    assert read_env_file(tmp_path) == {"ARBITER_DATABASE_URL": URL}


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_an_env_file_others_can_write_is_ignored(tmp_path: Path, mode: int,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    env_file(tmp_path, mode)
    assert read_env_file(tmp_path) == {}
    assert "ignoring" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: chown to another user")
def test_an_env_file_of_another_user_is_ignored(tmp_path: Path) -> None:
    os.chown(env_file(tmp_path, 0o600), 65534, 65534)  # nobody
    assert read_env_file(tmp_path) == {}


def test_a_symlinked_env_file_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = env_file(elsewhere, 0o600)
    (tmp_path / ENV_FILE).symlink_to(target)
    assert read_env_file(tmp_path) == {}


def test_the_data_folder_is_made_private_and_a_foreign_folder_keeps_its_mode(
        tmp_path: Path) -> None:
    made = tmp_path / "parent" / ".arbiter"
    make_data_dir(made)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    ours = tmp_path / "ours"
    (ours / "postgres").mkdir(parents=True)
    ours.chmod(0o755)
    make_data_dir(ours)  # an earlier run's folder: tightened
    assert stat.S_IMODE(ours.stat().st_mode) == 0o700
    foreign = tmp_path / "foreign"
    (foreign / "notes.txt").parent.mkdir()
    (foreign / "notes.txt").write_text("not ours")
    foreign.chmod(0o755)
    make_data_dir(foreign)
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o755
