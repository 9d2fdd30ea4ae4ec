"""The `dropflow` command's surface: every option explained, and a version to quote."""

from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from dropflow_dev.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "dropflow"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_subcommand_has_help():
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]

    assert missing == [], f"options without help: {missing}"


def test_the_walk_reaches_the_nested_subcommands():
    paths = {path for path, _ in _parsers(build_parser())}

    assert {"dropflow local up", "dropflow models show", "dropflow status"} <= paths


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])

    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"dropflow {version('dropflow')}"
