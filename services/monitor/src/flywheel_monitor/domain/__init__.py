"""The monitor's decision logic as plain, serialisable objects: no Kafka, no faust, no clock.

- ``windows``: event-time buckets and a bounded series of mergeable statistics per bucket.
- ``metrics``: mergeable statistics (labelled metrics, label-free performance estimates);
  ``latency``: latency quantiles; ``sparse``: the sparse histograms they share.
- ``episodes``: retrain requests that do not storm (confirmation, hysteresis, cooldown).
- ``rollout``: shadow and canary verdicts on live evidence, valid under repeated looks;
  ``arms``: one arm's live traffic; ``guardrails``: the checks and their confidence bounds.

Every state object round-trips through ``to_dict()`` / ``from_dict()`` as plain JSON (it
lives in faust tables) and every update is deterministic: the same inputs in the same order
give the same state and the same decisions, which carry deterministic event ids.
"""
