"""Where the commands write: standard output for results, standard error for progress
and problems.  soft_wrap: one problem stays one line when piped into grep or a script.
emoji=False: what is shown is shown as it is (a folder named ":rocket:" stays that),
and rich's table of emoji codes (0.2 MB) is never loaded."""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, emoji=False)

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def wide_console() -> Console:
    """Standard output for a table: the terminal's width, or when piped one line per row
    however long (rich would squeeze a table into 80 columns and cut what does not fit)."""
    if console.is_terminal:
        return console
    return Console(soft_wrap=True, width=100_000, emoji=False)
