"""The champion/challenger decision: does a challenger replace the version an alias serves?

Both are measured on the same rows (an ``evaluate`` job); the challenger is promoted when it is
at least ``min_improvement`` better on ``metric``, or when there is no champion yet (the alias is
not set: a first deployment).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHALLENGER", "CHAMPION", "METRICS", "decide"]

CHALLENGER, CHAMPION = "challenger", "champion"
# metric → which way is better
METRICS = {"accuracy": "higher", "macro_f1": "higher", "loss": "lower"}


def decide(results: dict[str, dict[str, Any]], metric: str, min_improvement: float) -> dict[str, Any]:
    """promote / improvement / reason for a challenger against a champion (improvement ≥ minimum)."""
    if CHALLENGER not in results or CHAMPION not in results:
        return {"promote": False, "improvement": None,
                "reason": f"nothing to decide: models labelled {CHALLENGER!r} and {CHAMPION!r} are both needed"}
    challenger, champion = results[CHALLENGER], results[CHAMPION]
    if "missing" in challenger or challenger.get(metric) is None:
        return {"promote": False, "improvement": None,
                "reason": f"challenger {challenger['ref']} has no {metric}: keep champion"}
    ch = float(challenger[metric])
    if "missing" in champion or champion.get(metric) is None:
        why = champion.get("missing") or f"champion has no {metric}"
        return {"promote": True, "improvement": None,
                "reason": f"no champion ({why}): promote challenger ({metric} {ch:.4g})"}
    cp = float(champion[metric])
    improvement = round(ch - cp if METRICS[metric] == "higher" else cp - ch, 6)
    promote = improvement >= min_improvement - 1e-9
    sign = "≥" if promote else "<"
    verdict = "promote" if promote else "keep champion"
    return {"promote": promote, "improvement": improvement,
            "reason": f"challenger {metric} {ch:.4g} vs champion {cp:.4g} "
                      f"({improvement:+.4g} {sign} {min_improvement:g}): {verdict}"}
