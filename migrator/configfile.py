"""`--config wave.toml`: a command's options from a TOML file, the command line winning.

Keys are the long options without their dashes (`target-server = "imaps://new.example"`,
or `target_server`); values are what the option takes (a list for a repeatable one, true
or false for a switch).  The file's values become the command's defaults, so anything
given on the command line overrides them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from migrator.errors import ConfigError


def config_path(argv: Sequence[str]) -> Path | None:
    """The --config the command line gives, if any (before the full parse)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(list(argv))
    return known.config if isinstance(known.config, Path) else None


def apply_config(parser: argparse.ArgumentParser, path: Path) -> None:
    """Make the file's values `parser`'s defaults (a required option given there is no
    longer required on the command line); ConfigError naming the key otherwise."""
    import tomllib  # only a command given --config reads TOML

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None
    by_name = {
        option.lstrip("-"): action
        for action in parser._actions  # argparse keeps its actions only here
        for option in action.option_strings
        if option.startswith("--")
    }
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        action = by_name.get(key) or by_name.get(key.replace("_", "-"))
        if action is None or action.dest in ("help", "config"):
            raise ConfigError(f"{path}: {key!r} is not an option of this command")
        defaults[action.dest] = _value(path, key, action, value)
        action.required = False
    parser.set_defaults(**defaults)


def _value(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(action, argparse._StoreConstAction):  # store_true and store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} is a switch: true or false")
        return action.const if value else action.default
    if isinstance(action, argparse._AppendAction):
        values = value if isinstance(value, list) else [value]
        return [_one(path, key, action, v) for v in values]
    if isinstance(value, list | dict):
        raise ConfigError(f"{path}: {key} takes one value")
    return _one(path, key, action, value)


def _one(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    try:
        converted = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {key}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{path}: {key} must be one of {choices}, not {value!r}")
    return converted
