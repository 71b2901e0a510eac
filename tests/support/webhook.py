"""The real ``leoflow-staging serve`` process for tests (lives in devenv: the demo and bench use it too)."""

from devenv.webhook import WebhookProcess, console_script

__all__ = ["WebhookProcess", "console_script"]
