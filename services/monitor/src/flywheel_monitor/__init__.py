"""Flywheel monitor: drift, live metrics from late labels, canary verdicts, retrain requests."""
