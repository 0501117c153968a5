"""Every numeric option of every subcommand refuses nonsense when the arguments are read:
zero where a count or a timeout is meant, negatives, NaN, infinity, out of range, not a
number. argparse exits 2 and its message names the option; nothing runs.

The command runs in-process through `migrator.cli.main`; argparse's exit is a SystemExit.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator import argtypes
from migrator.cli import _parser, main

BATCH = ["x.csv", "--method", "individual"]
PLAN = ["velocity", "plan", "inv.csv", "--throughput", "1", "--window", "1"]

# The commands each option belongs to, as argv prefixes (their required arguments given).
RUN_LIKE = [["run", *BATCH], ["enqueue", *BATCH], ["velocity", "run", *BATCH], ["check", *BATCH]]
FORWARDING = [["forwarding", action, *BATCH] for action in ("set", "remove", "status")]
INVENTORY = [["inventory", *BATCH]]
# Every command with a source end takes the Gmail source's options.
SOURCES = [*RUN_LIKE, *FORWARDING, *INVENTORY, ["validate", *BATCH]]

COUNT = ["0", "-1", "1.5", "nan", "inf", "", "x", "99999999999"]
PORT = ["0", "-1", "65536", "nan", "143.5", "x"]
SECONDS = ["0", "-1", "nan", "inf", "-inf", "1e400", "x", "1e9"]
GRACE = ["-1", "-0.1", "nan", "inf", "x", "1e9"]
SPAN = ["0", "0s", "-1h", "nan", "infh", "x", "6hours", "400d", "1e400"]
SYNCS = [["sync", "b1"], ["complete", "b1"]]

# (command prefixes, option, bad values, a good value and what it reads as)
TABLE: list[tuple[list[list[str]], str, list[str], tuple[str, object]]] = [
    (RUN_LIKE, "--timeout", SECONDS, ("2.5", 2.5)),
    (RUN_LIKE, "--late-commit-grace", GRACE, ("0", 0.0)),
    (RUN_LIKE, "--max-connections-per-server", COUNT, ("3", 3)),
    (RUN_LIKE, "--connections-per-mailbox", COUNT, ("2", 2)),
    (RUN_LIKE, "--workers", COUNT, ("8", 8)),
    (RUN_LIKE, "--sieve-port", PORT, ("4190", 4190)),
    (RUN_LIKE, "--target-max-connections", COUNT, ("5", 5)),
    ([["resume", "b1"]], "--workers", COUNT, ("2", 2)),
    (SYNCS, "--workers", COUNT, ("2", 2)),
    ([["sync", "b1"]], "--every", SPAN, ("6h", 21600.0)),
    ([["sync", "b1"]], "--times", COUNT, ("3", 3)),
    ([["velocity", "run", *BATCH]], "--concurrency", [*COUNT, "1,0", "1,1", ","], ("1,4", [1, 4])),
    ([["velocity", "run", *BATCH]], "--repeat", COUNT, ("3", 3)),
    ([["velocity", "run", *BATCH]], "--slowest", COUNT, ("7", 7)),
    ([PLAN], "--throughput", SECONDS, ("2.5", 2.5)),
    ([PLAN], "--window", SECONDS, ("48", 48.0)),
    ([PLAN], "--sessions", COUNT, ("16", 16)),
    ([PLAN], "--sessions-per-worker", COUNT, ("4", 4)),
    ([PLAN], "--workers", COUNT, ("3", 3)),
    ([PLAN], "--waves", COUNT, ("2", 2)),
    (INVENTORY, "--timeout", SECONDS, ("30", 30.0)),
    (INVENTORY, "--workers", COUNT, ("2", 2)),
    (FORWARDING, "--sieve-port", PORT, ("2000", 2000)),
    (FORWARDING, "--timeout", SECONDS, ("5", 5.0)),
    (FORWARDING, "--workers", COUNT, ("2", 2)),
    (FORWARDING, "--wait", SECONDS, ("60", 60.0)),
    (SOURCES, "--gmail-download-cap", COUNT, ("20", 20)),
    (SOURCES, "--gmail-upload-cap", COUNT, ("500", 500)),
    (SOURCES, "--gmail-cap-window", SECONDS, ("30", 30.0)),
    ([["check", *BATCH]], "--parallel", COUNT, ("16", 16)),
    ([["dashboard"]], "--port", PORT, ("8080", 8080)),
    ([["dashboard"]], "--refresh", SECONDS, ("0.5", 0.5)),
]


def _cases() -> Iterator[tuple[list[str], str, str]]:
    for prefixes, option, bad, _good in TABLE:
        for prefix in prefixes:
            for value in bad:
                yield prefix, option, value


@pytest.mark.parametrize(
    ("prefix", "option", "value"),
    list(_cases()),
    ids=[f"{' '.join(p[:2])} {o}={v!r}" for p, o, v in _cases()],
)
def test_nonsense_numbers_are_refused_with_exit_2_naming_the_option(
    prefix: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*prefix, f"{option}={value}"])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"argument {option}" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("prefix", "option", "good", "expected"),
    [(p, o, g, e) for ps, o, _bad, (g, e) in TABLE for p in ps],
)
def test_sensible_numbers_are_read_as_numbers(
    prefix: list[str], option: str, good: str, expected: object
) -> None:
    args = _parser().parse_args([*prefix, option, good])
    assert getattr(args, option.lstrip("-").replace("-", "_")) == expected


def _numeric_options(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, str]]:
    """(command path, option) of every option whose type reads a number, in every subcommand;
    an option typed plain int or float (which takes 0, -1, nan and inf) fails the test."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _numeric_options(sub, f"{path} {name}".strip())
            continue
        assert action.type not in (int, float), f"{path} {action.option_strings}: bare number"
        if isinstance(action.type, argtypes.NumberType):
            yield path, action.option_strings[-1]


def test_the_table_covers_every_numeric_option_of_every_command() -> None:
    in_table = {(" ".join(p[: 2 if p[0] in ("velocity", "forwarding") else 1]), o)
                for ps, o, _b, _g in TABLE for p in ps}  # fmt: skip
    assert set(_numeric_options(_parser())) == in_table


def test_a_refused_number_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The batch file does not even exist: the arguments are refused before it is read.
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "absent.csv"), "--method", "individual",
              "--max-connections-per-server", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert "--max-connections-per-server: must be at least 1" in " ".join(err.split())
    assert "absent.csv" not in err
