"""Chaos fixtures: the same code as `scoring chaos` (scoring/chaos/pytest_plugin.py), one stack per test module."""

from scoring.chaos.pytest_plugin import (  # noqa: F401 - fixtures and the report hook, re-exported for pytest
    chaos_experiment,
    chaos_reports,
    chaos_source,
    chaos_stack,
    chaos_target,
    pytest_terminal_summary,
)
