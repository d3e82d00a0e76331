"""The local tracing backend: Zipkin's server, fetched once from Maven Central into the cache.

Zipkin is the tracing backend of the local stack because it is the one a registry serves whole:
its server jar (``io.zipkin:zipkin-server``, the ``exec`` jar) carries its web UI and runs on the
machine's Java 17, with in-memory storage. (Jaeger from the Go module proxy holds only a
placeholder for its UI assets, and its ``replace`` directives stop ``go install``.)

Zipkin's server takes no OTLP (its OTLP module, ``zipkin-otel``, is not on Maven Central), so
the local processes export to it in Zipkin's own JSON with OpenTelemetry's Zipkin exporter
(``OTEL_EXPORTER_ZIPKIN_ENDPOINT``, shared/telemetry.py): one exporter more in each process,
where an OpenTelemetry Collector between them would be one more server to build and run. OTLP
stays the way to any other backend (``OTEL_EXPORTER_OTLP_ENDPOINT``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from deploy.gotools import cache_dir

# The one place the Zipkin server version is pinned, with the SHA-256 of its exec jar.
ZIPKIN_ARTIFACT = "io.zipkin:zipkin-server:3.6.1:jar:exec"
ZIPKIN_VERSION = "3.6.1"
ZIPKIN_SHA256 = "d8326e0ed4f43855dba81228f688554706e52578a7c782d9a90b73f8680654a1"
# Spans the in-memory store keeps (the oldest traces go first): bounds the JVM's heap.
MAX_SPANS = 100_000


class ZipkinUnavailableError(Exception):
    """No way to run Zipkin here; the message says how to fix it, in one line."""


def jar_path() -> Path:
    return cache_dir() / f"zipkin-server-{ZIPKIN_VERSION}" / "zipkin-server-exec.jar"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def java() -> str:
    """The machine's Java runtime (ZipkinUnavailableError with the fix when there is none)."""
    found = shutil.which("java")
    if found is None:
        raise ZipkinUnavailableError(
            "zipkin: Java is not installed; install a Java 17+ runtime (Debian: openjdk-17-jre) "
            "or set MEDIAI_ZIPKIN=false to run the stack without its tracing UI"
        )
    return found


def ensure_jar(announce: bool = True) -> Path:
    """The Zipkin server jar, fetched with Maven (``mvn dependency:copy``, checksums enforced)
    on first use and checked against the pinned SHA-256 before it is kept."""
    target = jar_path()
    if target.is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ZipkinUnavailableError(
            "zipkin: Maven is not installed to fetch the server jar; install it (Debian: maven) "
            "or set MEDIAI_ZIPKIN=false"
        )
    if announce:
        print(f"fetching the Zipkin server {ZIPKIN_VERSION} once (135 MB)...", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        result = subprocess.run(
            [
                mvn,
                "--batch-mode",
                "--quiet",
                "--strict-checksums",
                "dependency:copy",
                f"-Dartifact={ZIPKIN_ARTIFACT}",
                f"-DoutputDirectory={folder}",
                # A repository of its own, dropped afterwards: no second copy in ~/.m2.
                f"-Dmaven.repo.local={folder}/repository",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        fetched = Path(folder) / f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"
        if result.returncode != 0 or not fetched.is_file():
            output = (result.stdout + result.stderr).strip().splitlines() or ["no output"]
            raise ZipkinUnavailableError(f"zipkin: mvn dependency:copy failed: {output[-1]}")
        if _sha256(fetched) != ZIPKIN_SHA256:
            raise ZipkinUnavailableError(
                f"zipkin: the fetched jar's SHA-256 is not the pinned one ({ZIPKIN_SHA256[:12]}…)"
            )
        # Renamed atomically, so an interrupted fetch never leaves a half-written jar.
        os.replace(fetched, target)
    return target


def command(host: str, port: int) -> list[str]:
    """The server's command line: in-memory storage, bound to ``host`` only, tuned to start
    fast on a small machine (C1 compiler only, serial GC, a small heap)."""
    return [
        shutil.which("java") or "java",
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-Xms64m",
        "-Xmx384m",
        f"-Darmeria.ports[0].ip={host}",
        f"-Darmeria.ports[0].port={port}",
        "-Darmeria.ports[0].protocols[0]=http",
        "-jar",
        str(jar_path()),
    ]


def environment(port: int) -> dict[str, str]:
    return {
        "STORAGE_TYPE": "mem",
        "MEM_MAX_SPANS": str(MAX_SPANS),
        "QUERY_PORT": str(port),
        # Zipkin tracing itself would only add its own spans to ours.
        "SELF_TRACING_ENABLED": "false",
    }
