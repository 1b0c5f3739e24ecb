"""The kinds of job there are: one list for the store, the worker's dispatch, the API filter and the CLI."""

from __future__ import annotations

# train/predict/evaluate: training/service.py; monitor: monitoring/service.py (one monitor run);
# baseline: monitoring/baseline_job.py (a model version's monitoring baseline)
JOB_KINDS = ("train", "predict", "evaluate", "monitor", "baseline")
