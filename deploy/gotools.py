"""Programs built once from the Go module proxy into the cache (``~/.cache/mediai``), by
``go install`` at a pinned version: the LiveKit server, and tools CI needs (helm)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class GoToolUnavailableError(Exception):
    """The tool cannot be had here; the message is one line saying why."""


@dataclass(frozen=True)
class GoTool:
    name: str  # what it is called in messages
    module: str  # the package path `go install` takes
    version: str
    binary: str  # its name in the cache

    @property
    def installs_as(self) -> str:
        """The file `go install` writes: the last element of the package path."""
        return self.module.rsplit("/", 1)[-1]

    @property
    def path(self) -> Path:
        return cache_dir() / f"{self.binary}-{self.version}" / self.binary


HELM = GoTool("helm", "helm.sh/helm/v3/cmd/helm", "v3.22.0", "helm")
TOOLS = {tool.name: tool for tool in (HELM,)}


def cache_dir() -> Path:
    base = os.environ.get("MEDIAI_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mediai"
    )
    return Path(base)


def build(tool: GoTool, *, announce: bool = True) -> Path:
    """The tool's binary, building it with ``go install`` on first use."""
    target = tool.path
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise GoToolUnavailableError(
            f"{tool.name}: Go is not installed; install Go 1.23+ (https://go.dev/dl)"
        )
    if announce:
        print(f"building {tool.name} {tool.version} once (a few minutes)...", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as gobin:
        env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath"}
        result = subprocess.run(
            [go, "install", f"{tool.module}@{tool.version}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise GoToolUnavailableError(f"{tool.name}: go install failed: {last}")
        # Rename atomically, so an interrupted build never leaves a half-written binary.
        os.replace(Path(gobin) / tool.installs_as, target)
    return target
