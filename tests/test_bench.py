"""The benchmarks are not run by `make test` (they measure; `make bench` runs them on a quiet
machine), so a renamed function they import would only break them on the day someone measures:
each module imports, and `make bench` names only modules that exist."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import procs

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_each_benchmark_imports(module: str) -> None:
    importlib.import_module(f"bench.{module}")


def test_make_bench_runs_benchmarks_that_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    run = re.findall(r"python -m bench\.(\w+)", target)
    assert run and set(run) <= set(MODULES)


def test_process_figures_of_a_real_child() -> None:
    """bench/procs.py reads what the capacity and soak benches report: a child process is
    found among this process's descendants, with memory and descriptors, and not once gone."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid in procs.descendants(os.getpid())
        used = procs.usage(child.pid)
        assert 0 < used.uss <= used.pss <= used.rss
        assert used.fds >= 3  # stdin, stdout, stderr
    finally:
        child.kill()
        child.wait()
    assert child.pid not in procs.descendants(os.getpid())
    assert procs.usage(child.pid).rss == 0
