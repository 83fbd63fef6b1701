#!/usr/bin/env python3
"""Regenerate docs/cli_reference.md from the click command tree (run after changing a flag).

Usage: python scripts/gen_cli_reference.py [--check]
With --check, exit 1 when the committed file differs from what would be generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tltk.cli.app import GROUPS, ROOT_COMMANDS, cli  # noqa: E402

HEADER = """# CLI reference

Generated from the command definitions by `scripts/gen_cli_reference.py`; do not edit by hand.

Usage: `tltk <model> <subtask> [OPTIONS]`. Subtask names accept `_` and `-`, and every long flag
accepts both spellings (`--experiment_spec_file` == `--experiment-spec-file`). Every subtask also
takes the global options `--log_file FILE`, `-v/--verbose` and `--json` (see
`docs/exit_codes.md` for exit codes and the JSON error document). `-k/--key` can also be given
through the `TLTK_KEY` environment variable. TensorFlow's own C++ start-up lines (CUDA probing
on machines without a GPU) and its graph optimizer's warnings during `train` and `export`
(`Error in PredictCost()`, about its cost model) are hidden unless `--verbose`; `--log_file`
keeps them.
"""

GLOBAL = {"--log_file", "--verbose", "--json"}


def _param_row(param: click.Parameter) -> str | None:
    if not isinstance(param, click.Option):
        meta = param.human_readable_name.upper()
        return f"| `{meta}` (argument) | {'required' if param.required else 'optional'} | | |"
    if set(param.opts) & GLOBAL:
        return None
    names = ", ".join(f"`{o}`" for o in param.opts + param.secondary_opts)
    if param.is_flag:
        kind = "flag"
    elif isinstance(param.type, click.Choice):
        kind = " \\| ".join(str(c) for c in param.type.choices)
    else:
        kind = param.type.name.upper()
    if param.multiple:
        kind += " (repeatable)"
    default = "" if param.default in (None, False, (), "") or param.is_flag else f"`{param.default}`"
    help_text = (param.help or "").replace("|", "\\|").replace("\n", " ")
    req = "required" if param.required else default
    return f"| {names} | {kind} | {req} | {help_text} |"


def _command_section(path: str, cmd: click.Command) -> list[str]:
    lines = [f"### `tltk {path}`", ""]
    help_text = (cmd.help or "").strip()
    if help_text:
        lines += [help_text, ""]
    rows = [r for r in (_param_row(p) for p in cmd.params) if r]
    if rows:
        lines += ["| option | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    return lines


def generate() -> str:
    ctx = click.Context(cli)
    out = [HEADER]
    for name in sorted(ROOT_COMMANDS):
        out += _command_section(name, cli.get_command(ctx, name))
    for group_name, (help_text, table) in GROUPS.items():
        group = cli.get_command(ctx, group_name)
        out += [f"## `tltk {group_name}`", "", help_text, ""]
        gctx = click.Context(group, parent=ctx)
        for sub in sorted(table):
            out += _command_section(f"{group_name} {sub}", group.get_command(gctx, sub))
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    target = ROOT / "docs" / "cli_reference.md"
    text = generate()
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            print("docs/cli_reference.md is out of date: run python scripts/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
