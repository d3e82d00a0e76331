"""The benchmarks are not run by `make test` (they measure; `make bench` runs them on a quiet
machine), so a renamed function they import would only break them on the day someone measures:
each module imports, and `make bench` names only modules that exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

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
