"""Labelled DSJSON lines, as the joined data contract lays them out, for in-process learning.

The simulator needs such lines in two places the pipeline does not cover: the synthetic
world's warm-start history and the in-process online learner. Both must look to VW exactly
like the pipeline's joined export, so they are built from the shared `decision_line`.
"""

from __future__ import annotations

from collections.abc import Sequence

from cbloop.clock import format_ts
from cbloop.encoding import decision_line
from cbloop.encoding import labelled_line as encoding_labelled_line
from cbloop.sampling import ranking_order


def labelled_line(
    *,
    event_id: str,
    c_json: bytes,
    action_ids: Sequence[str],
    pmf: Sequence[float],
    chosen: int,
    reward: float,
    experiment: str,
    model_id: str,
    sample_prob: float = 0.0,
    ts: str | None = None,
) -> str:
    """A learnable line for one interaction, laid out exactly as the pipeline's joined export."""
    decision = decision_line(
        event_id=event_id,
        ts=ts if ts is not None else format_ts(),
        order=ranking_order(pmf, chosen),
        probabilities=pmf,
        c_json=c_json,
        experiment=experiment,
        model_id=model_id,
        action_ids=action_ids,
        sample_prob=sample_prob,
        deferred=False,
    )
    return encoding_labelled_line(
        decision, chosen=chosen, probability=pmf[chosen], reward=reward
    ).decode()
