"""What the test servers we run as child processes share: a directory of their own
(removed afterwards when we made it), logs to read back, and the context-manager life."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self


class ServerProcess:
    """Subclasses set `log_files` and implement start() and stop()."""

    log_files: tuple[str, ...] = ()  # names in `dir`, read in this order by log_text()

    def __init__(self, directory: Path | None, *, prefix: str) -> None:
        self._owns_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix=prefix)) if directory is None else directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 10.0) -> Self:
        raise NotImplementedError

    def stop(self, *, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def _wait_until_ready(self, timeout: float) -> None:
        raise NotImplementedError

    def _spawn(self, args: list[str], output: str, timeout: float) -> Self:
        """Run `args` in the foreground, what it prints going to `output` in the directory
        (a server reports bad arguments there before it opens its log), and wait until it
        serves; stopped again if it never does."""
        with open(self.dir / output, "ab") as out:
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's (master) process id while running."""
        return None if self._process is None else self._process.pid

    def log_text(self) -> str:
        """What the server wrote to its stdout and its log file."""
        parts = []
        for name in self.log_files:
            with contextlib.suppress(FileNotFoundError):
                parts.append((self.dir / name).read_text(errors="replace"))
        return "".join(parts)

    def cleanup(self) -> None:
        """Stop, and remove the directory if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()  # __exit__ does not run when __enter__ raises
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
