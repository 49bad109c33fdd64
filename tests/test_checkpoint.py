"""Checkpoints are complete or absent; failures leave the previous one as latest."""
import errno
from pathlib import Path

import pytest
import torch

from wqmix_cli import checkpoint as ckpt
from wqmix_cli.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from wqmix_cli.cli import main


def test_latest_names_the_newest_and_old_ones_are_pruned_after(tmp_path):
    for t in (10, 20, 30, 40):
        save_checkpoint(tmp_path, t, {"t": t}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["30", "40", "latest"]
    assert latest_checkpoint(tmp_path).name == "40"
    assert load_checkpoint(latest_checkpoint(tmp_path))[0] == {"t": 40}


def test_buffer_is_compressed_and_round_trips(tmp_path):
    buffer = {"obs": torch.zeros(200, 26, 3, 18), "size": 200}
    folder = save_checkpoint(tmp_path, 5, {"t": 5}, buffer=buffer)
    assert (folder / "buffer.pt.gz").stat().st_size < buffer["obs"].nbytes / 50
    _, loaded = load_checkpoint(folder, with_buffer=True)
    assert torch.equal(loaded["obs"], buffer["obs"]) and loaded["size"] == 200


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 10, {"t": 10})

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", no_space)
    with pytest.raises(CheckpointError, match="No space left on device") as raised:
        save_checkpoint(tmp_path, 20, {"t": 20})
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10", "latest"]
    assert load_checkpoint(latest_checkpoint(tmp_path))[0] == {"t": 10}


def test_a_half_written_checkpoint_is_never_latest(tmp_path):
    save_checkpoint(tmp_path, 10, {"t": 10})
    (tmp_path / ".20.tmp").mkdir()
    (tmp_path / ".20.tmp" / "state.pt").write_bytes(b"truncated")
    assert latest_checkpoint(tmp_path).name == "10"
    (tmp_path / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "10"


def test_unreadable_checkpoint_is_one_line(tmp_path):
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read checkpoint") as raised:
        load_checkpoint(tmp_path / "5")
    assert "\n" not in str(raised.value)


def test_output_folder_that_cannot_be_written_is_bad_input(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["train", f"hydra.run.dir={blocker}/run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write there" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_refuses_new_folders_is_bad_input_even_for_root(capsys):
    """/proc takes no new folders, though os.access calls it writable for root."""
    assert main(["train", "hydra.run.dir=/proc/wqmix-run"]) == 2
    err = capsys.readouterr().err
    assert err == "wqmix: hydra.run.dir=/proc/wqmix-run: cannot write there (not a writable folder)\n"
