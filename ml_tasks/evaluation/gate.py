"""The champion/challenger gate: promote a candidate only when it beats the champion by a margin."""

from __future__ import annotations


def gate(candidate_ndcg: float, champion_ndcg: float | None, margin: float) -> tuple[bool, str]:
    """Promote when there is no champion, or the candidate beats it by ``margin`` (relative)."""
    if champion_ndcg is None:
        return True, "no champion yet"
    needed = champion_ndcg * (1.0 + margin)
    if candidate_ndcg > needed:
        return True, f"ndcg@10 {candidate_ndcg:.4f} > champion {champion_ndcg:.4f} x (1 + {margin:g})"
    return False, f"ndcg@10 {candidate_ndcg:.4f} <= champion {champion_ndcg:.4f} x (1 + {margin:g})"
