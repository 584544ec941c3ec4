"""Reliability tooling: kill/relaunch harness used by ``make stress`` and the preemption tests."""
