"""The command line's help: examples for `--help`, `--version`, and `--config FILE`
(a command's options from TOML: migrator.configfile)."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from migrator.configfile import apply_config, config_path

EXAMPLES = {
    "": """examples:
  migrator validate wave1.csv --method individual
  migrator check wave1.csv --method individual --target-server imaps://new.example \\
      --target-admin admin --target-admin-password-file admin.pw
  migrator run wave1.csv --config wave.toml
  migrator status BATCH_ID; migrator report BATCH_ID; migrator dashboard""",
    "validate": """examples:
  migrator validate wave1.csv --method individual
  migrator validate wave1.csv --method combined --admin admin \\
      --combined-template '{user}*{admin}'""",
    "run": """examples:
  migrator run wave1.csv --method individual --target-server imaps://new.example \\
      --target-admin admin --target-admin-password-file admin.pw --quotas users.csv
  migrator run wave1.csv --config wave.toml --batch-id wave1 --notify-email ops@example.com

--config FILE reads options from TOML (the command line wins), e.g.:
  method = "individual"
  target-server = "imaps://new.example"
  target-admin = "admin"
  target-admin-password-file = "admin.pw"
  notify-email = ["ops@example.com"]""",
    "status": """examples:
  migrator status 20260101-wave1
  migrator status 20260101-wave1 --json | jq .totals
  migrator status 20260101-wave1 > wave1.txt       # one line per mailbox, errors whole""",
    "resume": """examples:
  migrator resume 20260101-wave1                   # every mailbox not done, again
  MIGRATOR_REDIS_URL=redis://redis:6379/0 migrator resume 20260101-wave1 --no-wait""",
    "enqueue": """examples:
  MIGRATOR_REDIS_URL=redis://redis:6379/0 migrator enqueue wave1.csv --method proxyauth \
      --admin admin --admin-password-file src.pw --target ews \
      --target-server outlook.office365.com --impersonate --target-admin svc@example.com
  migrator enqueue wave1.csv --config wave.toml --notify-webhook https://chat.example/hook""",
}


def command_parser(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=text,
        description=text,
        epilog=EXAMPLES.get(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


class VersionAction(argparse.Action):
    """`--version`: argparse's own version action, the version looked up only when asked
    (reading the installed packages' metadata is a cost every other command would pay)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show program's version number and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"migrator {version()}")
        parser.exit()


def version() -> str:
    try:
        return importlib.metadata.version("migrator")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read options from this TOML file (keys are the long options; the command line wins)",
    )


def read_config(parser: argparse.ArgumentParser, words: list[str]) -> None:
    """A command's --config file as its defaults, before its arguments are parsed."""
    path = config_path(words)
    if path is None:
        return
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    name = next((w for w in words if w in sub.choices), None)
    command = sub.choices.get(name) if name else None
    if command is None or not any("--config" in a.option_strings for a in command._actions):
        return  # argparse itself says that this command has no --config
    apply_config(command, path)
