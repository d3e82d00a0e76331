"""Crash points: a process started with MEDIAI_CRASH_POINT dies there, and only there."""

from __future__ import annotations

import os
import subprocess
import sys

from shared.crashpoints import CRASH_EXIT_CODE

PROGRAM = """
from shared.crashpoints import crash_point
crash_point("somewhere.else")
print("before", flush=True)
crash_point("here")
print("after", flush=True)
"""


def run(point: str | None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MEDIAI_CRASH_POINT"}
    if point is not None:
        environ["MEDIAI_CRASH_POINT"] = point
    return subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_armed_point_ends_the_process_at_once_with_its_exit_code_and_one_line() -> None:
    result = run("here")
    assert result.returncode == CRASH_EXIT_CODE
    assert result.stdout.split() == ["before"]
    assert "crash point here reached" in result.stderr


def test_unarmed_or_another_point_changes_nothing() -> None:
    for point in (None, "", "nowhere"):
        result = run(point)
        assert (result.returncode, result.stdout.split()) == (0, ["before", "after"])
