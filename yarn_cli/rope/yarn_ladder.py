"""Dynamic YaRN for a conversation: the smallest scale that holds it, from a fixed ladder, never going down.

The paper's Dynamic Scaling sets s = max(1, length / L) at every step; llama.cpp fixes a context's
scaling when the context is created, so a chat can only change it between turns, with the
conversation evaluated again. A ladder of factors keeps those changes rare.
"""

from __future__ import annotations

LADDER = (1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)


def dynamic_factor(tokens: int, native: int) -> float | None:
    """The smallest ladder factor whose window (native x factor) holds ``tokens``; None when the native one does."""
    if tokens <= native:
        return None
    for factor in LADDER:
        if native * factor >= tokens:
            return factor
    return tokens / native  # beyond the ladder: exactly what is needed
