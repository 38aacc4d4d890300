"""Summary statistics for latency samples (nearest-rank percentiles, as load testers report)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile (0 < q ≤ 100); None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95, p99, max and mean of ``values``."""
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


def words(text: str) -> list[str]:
    """``text`` as words to compare: lower case, without punctuation ("It's" stays one)."""
    return re.findall(r"[\w']+", text.lower())


def word_errors(reference: str, heard: str) -> int:
    """Word-level edit distance (substitutions + deletions + insertions) from ``reference``
    to ``heard``: a word error rate's numerator, over ``len(words(reference))``."""
    ref, hyp = words(reference), words(heard)
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        row = [i]
        for j, other in enumerate(hyp, 1):
            row.append(min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = row
    return previous[-1]
