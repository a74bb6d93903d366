"""Progress display that suits where stderr goes.

On a terminal this is a normal tqdm bar. When stderr is not a terminal (CI logs, `| tee`, a file) a bar
would write thousands of carriage-return updates into the log, so a plain line is printed every
`LOG_EVERY_PCT` percent instead. `TQDM_DISABLE` (any value but "", "0", "false") turns both off.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_EVERY_PCT = 5


def _disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


class LineProgress:
    """The tqdm calls the project uses (`update`, `set_postfix`, `close`), written as one log line per step of
    `every_pct` percent (and one at the end) instead of a redrawn bar."""

    def __init__(self, total: int, desc: str, initial: int = 0, every_pct: int = LOG_EVERY_PCT,
                 file: TextIO | None = None, disable: bool = False):
        self.total, self.desc, self.n = max(int(total), 0), desc, int(initial)
        self.every_pct, self.file, self.disable = every_pct, file, disable
        self.postfix = ""
        self._last_bucket = self._bucket()
        self._printed_n: int | None = None

    def _bucket(self) -> int:
        return (100 * self.n // self.total) // self.every_pct if self.total else 0

    def _print(self) -> None:
        pct = 100 * self.n // self.total if self.total else 100
        line = f"{self.desc}: {self.n}/{self.total} ({pct}%)" + (f" {self.postfix}" if self.postfix else "")
        print(line, file=self.file or sys.stderr, flush=True)
        self._printed_n = self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        bucket = self._bucket()
        if not self.disable and bucket > self._last_bucket:
            self._last_bucket = bucket
            self._print()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if not self.disable and self._printed_n != self.n:
            self._print()
        self.disable = True  # closing twice prints nothing more


def progress_bar(total: int, desc: str, initial: int = 0, file: TextIO | None = None) -> tqdm | LineProgress:
    """A tqdm bar when `file` (default stderr) is a terminal, else a `LineProgress` printing every ~5 %."""
    stream = file or sys.stderr
    if stream.isatty():
        return tqdm(total=total, initial=initial, desc=desc, leave=False, file=stream)
    return LineProgress(total, desc, initial=initial, file=stream, disable=_disabled())
