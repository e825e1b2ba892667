"""Choosing a scaling by measurement: which way to reach a context N costs least, where.

Every candidate is measured three ways, each the figure another command gives, so a user can
reproduce it: the long perplexity at N (``perplexity --contexts N --compare VARIANT`` on the same
text), the short-context cost against the unscaled model (``perplexity --contexts SHORT --reference
none``: mean KL per token and top-1 agreement), and passkey retrieval at N. The rule: among the
candidates whose short KL is at most ``max_kl``, the lowest long perplexity. The choice is then on
the Pareto front of (long perplexity, short KL): no candidate is better on both. ``tune_run`` runs it.

The budget: the short KL is cheap (short windows) and measured for all; the long perplexity is
measured only for candidates whose short KL is within ``WEAK_KL`` times ``max_kl`` (the others cannot
be chosen, and are marked stopped); passkey, the dearest, only for the choice and the best static
candidate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from yarn_cli.errors import InputError

# The default short-context budget, in nats per token: on SmolLM2-135M at 2,048 tokens YaRN x2 costs
# 0.028 and NTK-by-parts x2 0.010, while linear x2 costs several times more (docs/tune.md); 0.05 keeps
# the scalings that leave short texts almost as they were and refuses those that do not.
DEFAULT_MAX_KL = 0.05
WEAK_KL = 4  # a candidate whose short KL is above WEAK_KL x max_kl is not measured further
SHORT_CONTEXT = 2048
PASSKEY_TRIALS = 3
DYNAMIC = ("dynamic-yarn", "dynamic-ntk")


@dataclass(frozen=True)
class TuneSettings:
    context: int  # N, the context to reach
    short_context: int  # where the short-context cost is measured
    candidates: list[str]  # variant names, as --compare takes them
    max_kl: float = DEFAULT_MAX_KL
    trials: int = PASSKEY_TRIALS
    seed: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.max_kl) or self.max_kl < 0:
            raise InputError(f"--max-kl is a KL divergence in nats per token, 0 or more; got {self.max_kl}")
        if self.trials < 1:
            raise InputError(f"--trials must be at least 1, got {self.trials}")

    def identity(self) -> dict[str, Any]:
        """What must match for a saved tune's measurements to be reused (candidates may grow)."""
        return {"context": self.context, "short_context": self.short_context, "trials": self.trials,
                "seed": self.seed}  # fmt: skip


def scale_factor(context: int, native: int | None) -> float:
    """S = N / native, refused where it is no extension."""
    if native is None:
        raise InputError("the model states no context length, so the factor to reach --context is unknown")
    if context <= native:
        raise InputError(
            f"--context {context:,} is within the model's native {native:,} tokens: nothing to extend; give a "
            "longer context"
        )
    return context / native


def default_candidates(context: int, native: int | None) -> list[str]:
    """The paper's methods at S = N / native, YaRN also with its attention factor 10% either side, and the
    dynamic ones."""
    s = f"{scale_factor(context, native):g}"
    return [f"linear:{s}", f"ntk:{s}", f"ntk-by-parts:{s}", f"yarn:{s}", f"yarn:{s}@0.9", f"yarn:{s}@1.1", *DYNAMIC]


def short_context_for(native: int | None) -> int:
    return min(native or SHORT_CONTEXT, SHORT_CONTEXT)


@dataclass
class Cost:
    tokens: int = 0  # tokens evaluated
    seconds: float = 0.0


@dataclass
class Candidate:
    variant: str
    short_kl: float | None = None  # mean KL(P_none || P_variant) per token at the short context
    short_kl_p99: float | None = None
    short_top1: float | None = None  # top-1 agreement with none there
    long_perplexity: float | None = None  # at N, as ``perplexity --contexts N`` gives it
    passkey: float | None = None  # accuracy at N, where run
    passkey_trials: int = 0
    stopped: str | None = None  # why it was measured no further
    cost: dict[str, Cost] = field(default_factory=dict)  # per measurement: short, long, passkey

    @property
    def dynamic(self) -> bool:
        return self.variant in DYNAMIC

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost"] = {k: {"tokens": c.tokens, "seconds": round(c.seconds, 3)} for k, c in self.cost.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        costs = {k: Cost(int(v["tokens"]), float(v["seconds"])) for k, v in data.get("cost", {}).items()}
        values = {k: data.get(k) for k in ("short_kl", "short_kl_p99", "short_top1", "long_perplexity", "passkey",
                                           "stopped")}  # fmt: skip
        for key, value in values.items():
            if value is not None and not isinstance(value, (int, float) if key != "stopped" else str):
                raise ValueError(f"a candidate's {key} is {value!r}")
        return cls(str(data["variant"]), passkey_trials=int(data.get("passkey_trials", 0)), cost=costs, **values)


def dominates(a: Candidate, b: Candidate) -> bool:
    """``a`` is at least as good as ``b`` on both long perplexity and short KL, and better on one."""
    assert a.long_perplexity is not None and a.short_kl is not None
    assert b.long_perplexity is not None and b.short_kl is not None
    return (
        a.long_perplexity <= b.long_perplexity
        and a.short_kl <= b.short_kl
        and (a.long_perplexity < b.long_perplexity or a.short_kl < b.short_kl)
    )


def front(candidates: list[Candidate]) -> list[str]:
    """The measured candidates no other beats on both long perplexity and short KL."""
    measured = [c for c in candidates if c.long_perplexity is not None and c.short_kl is not None]
    return [c.variant for c in measured if not any(dominates(d, c) for d in measured)]


@dataclass(frozen=True)
class Verdict:
    variant: str | None
    why: str


def choose(candidates: list[Candidate], max_kl: float, context: int, short: int, *, static: bool) -> Verdict:
    """Among the candidates (only static ones where ``static``) whose short KL is at most ``max_kl``, the
    lowest long perplexity (a lower short KL breaks a tie)."""
    pool = [c for c in candidates if not (static and c.dynamic)]
    measured = [c for c in pool if c.long_perplexity is not None and c.short_kl is not None]
    eligible = [c for c in measured if c.short_kl is not None and c.short_kl <= max_kl]
    kind = "static " if static else ""
    if not eligible:
        cheapest = min((c for c in pool if c.short_kl is not None), key=lambda c: c.short_kl or 0.0, default=None)
        detail = f"; the least is {cheapest.variant}'s {cheapest.short_kl:.4f}" if cheapest is not None else ""
        return Verdict(None, f"no {kind}candidate keeps the short KL at {short:,} tokens within {max_kl:g}{detail}")
    best = min(eligible, key=lambda c: (c.long_perplexity, c.short_kl))
    return Verdict(
        best.variant,
        f"the lowest perplexity at {context:,} tokens ({best.long_perplexity:.3f}) among the {kind}candidates whose "
        f"KL from the unscaled model at {short:,} tokens is at most {max_kl:g} (its own: {best.short_kl:.4f})",
    )
