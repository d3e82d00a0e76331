"""The cluster suite (issue 14, docs/scaling.md): the cluster topology of ``mediai up --cluster``
started once for the module, and the paths that matter run against it. Marked ``cluster``: it
runs after the rest (``make test``), never beside it, for it takes the machine."""

from __future__ import annotations

import pytest

from tests.faults.support import FIGURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in item.nodeid:
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("cluster figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
