"""`make demo` runs end to end: three mailboxes, two done and one stopped at its quota."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_copies_two_mailboxes_and_stops_one_at_its_quota() -> None:
    # Rich's result table at full width, so state names are not abridged.
    env = {**os.environ, "COLUMNS": "160"}
    demo = subprocess.run(
        [sys.executable, "-m", "scripts.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output
    table = [line for line in demo.stdout.splitlines() if "@target.test" in line and "│" in line]
    states = {line.split("│")[3].strip(): line.split("│")[4].strip() for line in table}
    assert states == {
        "alice@target.test": "synced",
        "bob@target.test": "synced",
        "carol@target.test": "quota_stopped",
    }, output
    assert "As expected" in demo.stdout
