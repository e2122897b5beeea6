"""Flywheel on one machine: the local stack of five services, and the closed-loop demo on it."""
