"""Flywheel registry: model specs, dataset contracts, versions, aliases, artifacts, lineage."""
