"""A one-line text progress bar for the runner's batch loops (`libra-jax run`, `evaluate`, `demo`)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line text progress bar on stderr (items/s, ETA); the first batch (compile) is not timed.
    `unit` names the items in the rate ('img', 'text', 'prompt')."""

    def __init__(self, total: int, label: str, stream=sys.stderr, unit: str = "img"):
        self.total, self.label, self.stream, self.unit = total, label, stream, unit
        self.done, self.timed, self.start = 0, 0, None

    def update(self, n: int) -> None:
        """Count `n` more items done and redraw the bar (a newline once all `total` are done)."""
        if self.start is None:
            self.start = time.perf_counter()  # after the first (compiling) batch
        else:
            self.timed += n
        self.done += n
        rate = self.timed / max(time.perf_counter() - self.start, 1e-9) if self.timed else 0.0
        speed = f"{rate:.1f} {self.unit}/s ETA {(self.total - self.done) / rate:.0f}s" if rate else "(compiling)"
        bar = "#" * int(30 * self.done / max(self.total, 1))
        self.stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {speed}   ")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
