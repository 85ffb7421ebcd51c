"""The `trackprep` command. Each area keeps its commands in its own module with a
`register(app)` function; the commands are thin wrappers over plain functions that
tests call directly."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="trackprep",
    help="Dense point trajectories for video segmentation datasets (Track4Gen preprocessing).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order here is the order of `trackprep --help`.
_COMMAND_MODULES = ("annotate_cmds", "shard_cmds", "dataset_cmds", "flow_cmds", "eval_cmds", "core_cmds")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"trackprep.cli.{_name}").register(app)


def main() -> None:
    app()
