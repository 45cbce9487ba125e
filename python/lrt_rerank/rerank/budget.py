"""The latency budget: how many passages fit in the time left, from a running cost estimate.

The estimate is pessimistic: a slower chunk is believed at once, a faster one (say, served from the
score cache) only lowers it gradually. Before any estimate exists, the first chunk is a probe of
``PROBE_PASSAGES`` passages, so a cold core overshoots its budget by at most that much.
"""

from __future__ import annotations

import threading

PROBE_PASSAGES = 4  # the first budgeted chunk, scored before the cost per passage is known


class CostEstimate:
    """Milliseconds per passage, learnt from earlier chunks. Thread-safe."""

    def __init__(self, chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._ms_per_passage: float | None = None
        self._lock = threading.Lock()

    @property
    def ms_per_passage(self) -> float | None:
        return self._ms_per_passage

    def chunk_that_fits(self, remaining_ms: float) -> int:
        """Passages to score next: a full chunk, fewer if the estimate says only fewer fit, 0 if none."""
        if remaining_ms <= 0:
            return 0
        estimate = self._ms_per_passage
        if estimate is None or estimate <= 0:
            return min(self.chunk_size, PROBE_PASSAGES)
        return min(self.chunk_size, int(remaining_ms / estimate))

    def observe(self, passages: int, elapsed_ms: float) -> None:
        """Learn from one scored chunk of ``passages`` that took ``elapsed_ms``."""
        if passages < 1:
            return
        per_passage = elapsed_ms / passages
        with self._lock:
            previous = self._ms_per_passage
            if previous is None or per_passage > previous:
                self._ms_per_passage = per_passage
            else:
                self._ms_per_passage = 0.7 * previous + 0.3 * per_passage
