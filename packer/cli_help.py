"""How every console script presents its `--help`: defaults shown, examples kept as written.

One formatter for flair-pack, flair-train, flair-infer, flair-zonal and flair-toy, so each option's
help ends with its default and each command's help ends with a few real examples (tests parse
every example with its parser, so they stay real).
"""

from __future__ import annotations

import argparse
import textwrap


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's default-showing formatter; in the description and epilog, paragraphs (separated by
    a blank line) are wrapped, except those with indented lines (examples), which stay as written.

    A default is appended unless the help text already speaks of it, the option is a flag
    (store_true: off unless given), or the default is None (such options say in words what
    happens when they are left out: "default: all cores").
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or action.default in (None, argparse.SUPPRESS) or action.nargs == 0
                or not action.option_strings or action.required):
            return text
        return text + " (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.strip("\n").split("\n\n")
        out = []
        for para in paragraphs:
            lines = para.splitlines()
            if any(line[:1].isspace() for line in lines[1:]) or para.startswith("examples:"):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(out)


def examples(*lines: str) -> str:
    """The epilog block: `examples:` then one command per line (comments after two spaces + #)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)
