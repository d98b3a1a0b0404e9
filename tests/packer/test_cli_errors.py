"""flair-pack's errors in the one style of every command (packer.command, docs/reliability.md):
a misspelt command, a full disk, an S3 output without a server, a stop by the user."""

from __future__ import annotations

import pytest

from packer import command
from packer.cli import main as pack_main


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("word, hint", [("verfiy", "did you mean verify?"), ("inpsect", "did you mean inspect?"),
                                        ("merg", "did you mean merge?"), ("shards/", "commands: pack, verify")])
def test_misspelt_subcommand_names_the_closest_one(word, hint, capsys, one_error_line):
    assert pack_main([word, "shards/"]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-pack")
    assert f"unknown command {word!r}" in line and hint in line and "--src" not in line


def test_disk_full_names_the_shard(toy_tree, tmp_path, capsys, disk_full_at, one_error_line):
    disk_full_at(2)
    out = tmp_path / "out"
    assert pack_main(["--src", str(toy_tree.root), "--out", str(out), "--workers", "1", "--no-progress",
                      "--shard-size", "3MB"]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-pack")
    assert str(out) in line and ".tar.partial" in line and "No space left on device" in line
    assert "rerun the same command" in line


def test_s3_output_without_a_server(toy_tree, tmp_path, capsys, no_s3_server, one_error_line):
    assert pack_main(["--src", str(toy_tree.root), "--out", "s3://flair/x", "--staging", str(tmp_path / "s"),
                      "--retries", "1", "--no-progress", "--workers", "1"]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-pack")
    assert "s3://flair" in line and no_s3_server in line and "failed after 1 attempt" in line


def test_sigterm_and_ctrl_c_are_one_line(capsys, one_error_line):
    def stopped(exc):
        def body():
            raise exc
        return body
    assert command.run_command("flair-x", stopped(KeyboardInterrupt()), interrupted="rerun to resume") == 130
    assert one_error_line(capsys.readouterr().err, "flair-x").endswith("interrupted (Ctrl-C); rerun to resume")
    assert command.run_command("flair-x", stopped(command.Terminated())) == 143
    assert "terminated (SIGTERM)" in one_error_line(capsys.readouterr().err, "flair-x")
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        command.run_command("flair-x", stopped(ZeroDivisionError()))
