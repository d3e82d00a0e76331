"""The fault suite (issue 9, docs/reliability.md): every case here is marked ``faults`` and
prints one line of figures, gathered again at the end of the run."""

from __future__ import annotations

import pytest

from tests.faults.support import FIGURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in item.nodeid:
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
