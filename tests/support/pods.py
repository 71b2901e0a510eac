"""Task pods for tests (live in devenv: the demo and bench use them too)."""

from devenv.pods import admission_review, task_pod

__all__ = ["admission_review", "task_pod"]
