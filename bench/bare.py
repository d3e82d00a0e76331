"""What the benchmarks' bare baselines share: serving an app exactly as ``mediai serve`` serves a
service (uvicorn with uvloop and httptools, no access log), so a pair differs only in the app."""

from __future__ import annotations

import uvicorn
from litestar import Litestar


def serve(app: Litestar, host: str, port: int) -> None:
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
