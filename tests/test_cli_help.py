"""Every command explains itself: each option has a help text showing its default, and each help
ends with two or three examples that its own parser accepts."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from inference.cli import infer_parser, zonal_parser
from packer.cli import inspect_parser, merge_parser, pack_parser, verify_parser
from tools.flair_toy import _parser as toy_parser
from trainer.train import build_parser as train_parser

PARSERS = {
    "flair-pack": pack_parser, "flair-pack verify": verify_parser, "flair-pack inspect": inspect_parser,
    "flair-pack merge": merge_parser, "flair-train": train_parser, "flair-infer": infer_parser,
    "flair-zonal": zonal_parser, "flair-toy": toy_parser,
}


def examples(parser: argparse.ArgumentParser) -> list[str]:
    epilog = parser.epilog or ""
    assert "examples:" in epilog, f"{parser.prog}: no examples"
    lines = epilog.split("examples:", 1)[1].strip().splitlines()
    return [line.split("  #")[0].strip() for line in lines if line.strip()]


@pytest.mark.parametrize("name", PARSERS)
def test_every_option_has_a_help_text_with_its_default(name):
    parser = PARSERS[name]()
    assert parser.prog == name
    fmt = parser.formatter_class(prog=parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        takes_value = action.option_strings and action.nargs != 0 and not action.required
        if takes_value:
            text = fmt._get_help_string(action) % {"default": action.default}
            assert "default" in text.lower(), f"{name} {action.option_strings}: the help does not show the default"


@pytest.mark.parametrize("name", PARSERS)
def test_help_ends_with_real_examples(name):
    parser = PARSERS[name]()
    lines = examples(parser)
    assert 2 <= len(lines) <= 3, lines
    words = name.split()
    for line in lines:
        argv = shlex.split(line)
        assert argv[: len(words)] == words, line
        parser.parse_args(argv[len(words):])  # exits (SystemExit) on anything the parser refuses
    # ... at the very end of --help, as written (not re-wrapped).
    assert parser.format_help().rstrip().splitlines()[-1].strip() == parser.epilog.strip().splitlines()[-1].strip()


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["flair-pack", "--help"], ["flair-pack", "inspect", "--help"], ["flair-toy", "--help"]])
def test_console_scripts_print_that_help(argv):
    """(flair-train, flair-infer and flair-zonal run as console scripts in tests/test_wheel_install.py.)"""
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "examples:" in proc.stdout and "(default:" in proc.stdout
