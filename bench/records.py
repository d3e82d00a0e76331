"""Where the benchmarks write their records: ``bench/results/<name>.json``, stamped with when
and on what machine (its cores, its load average, Python) they were measured."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def write_record(output: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``output`` (JSON) under the stamp; returns ``output``."""
    stamp = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
        },
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({**stamp, **record}, indent=2) + "\n")
    return output
