"""The supervisor's operations on one part of a running stack, on a plain process tree: what
the fault suite (tests/faults) does to NATS, PostgreSQL and LiveKit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.supervisor import Part, StackError, Supervisor, process_tree
from tests.support import until

# A parent with a child in its process group and a grandchild in a session of its own (as a
# server's worker may be): freezing the part must reach all three.
SCRIPT = "setsid sleep 300 & sleep 300 & wait"


def state_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def environ_of(pid: int | None) -> str:
    return Path(f"/proc/{pid}/environ").read_text("latin-1")


async def _always() -> bool:
    return True


@pytest.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[Supervisor]:
    running = Supervisor("127.0.0.1", tmp_path / "logs")
    part = Part(name="tree", argv=["sh", "-c", SCRIPT], url="", ready=_always, env={"KEPT": "yes"})
    await running.start(part)
    await until(lambda: len(process_tree(part.process.pid)) == 3)  # type: ignore[union-attr]
    yield running
    await running.stop()


async def test_freeze_stops_every_process_of_the_part_and_thaw_resumes_them(
    supervisor: Supervisor,
) -> None:
    frozen = supervisor.freeze("tree")
    assert len(frozen) == 3
    await until(lambda: all(state_of(pid) == "T" for pid in frozen))
    thawed = supervisor.thaw("tree")
    assert sorted(thawed) == sorted(frozen)
    await until(lambda: all(state_of(pid) != "T" for pid in frozen))


async def test_kill_then_start_again_runs_a_new_process_and_a_frozen_part_still_stops(
    supervisor: Supervisor,
) -> None:
    first = supervisor.pid("tree")
    await supervisor.kill("tree")
    assert supervisor.pid("tree") is None
    with pytest.raises(StackError, match="not running"):
        supervisor.freeze("tree")
    await supervisor.start_again("tree", env={"MEDIAI_CRASH_POINT": "nowhere"})
    second = supervisor.pid("tree")
    assert second not in (None, first)
    assert {"MEDIAI_CRASH_POINT=nowhere", "KEPT=yes"} <= set(environ_of(second).split("\0"))
    with pytest.raises(StackError, match="still running"):
        await supervisor.start_again("tree")
    supervisor.freeze("tree")
    await supervisor.stop_part("tree", timeout=5)  # SIGCONT first, or SIGTERM would wait
    assert supervisor.pid("tree") is None
    assert [p.name for p in supervisor.parts] == ["tree"]  # stopped, not forgotten
    with pytest.raises(StackError, match="no part 'nats'"):
        supervisor.part("nats")


def recording_part(name: str, record: Path, waits_for: str = "", *, last: bool = False) -> Part:
    """A part that, on SIGTERM, writes its name to ``record`` and, before exiting, waits for
    ``waits_for`` to have written its own (stopped one after the other, it never would). It is
    ready once its trap is set: a SIGTERM before that would end it without a record."""
    armed = record.with_name(f"{name}.armed")
    wait = f"until grep -qx {waits_for} {record}; do sleep 0.05; done; " if waits_for else ""
    script = (
        f"trap 'echo {name} >> {record}; {wait}exit 0' TERM; touch {armed}; "
        "while :; do sleep 0.1; done"
    )

    async def trap_set() -> bool:
        return armed.exists()

    return Part(
        name=name, argv=["sh", "-c", script], url="", ready=trap_set, stops_after_its_group=last
    )


async def test_stop_goes_back_through_the_groups_each_at_once_and_the_key_service_last(
    tmp_path: Path,
) -> None:
    record = tmp_path / "stopped"
    record.touch()
    running = Supervisor("127.0.0.1", tmp_path / "logs")
    server = recording_part("server", record)
    first, second = recording_part("a", record, "b"), recording_part("b", record, "a")
    keys = recording_part("keys", record, last=True)
    await running.start_together([server])
    await running.start_together([keys, first, second])
    await running.stop()
    stopped = record.read_text().split()
    assert sorted(stopped[:2]) == ["a", "b"] and stopped[2:] == ["keys", "server"], stopped
    # Each of a and b waited for the other: both exited on their own, neither was killed.
    assert [p.process.returncode for p in (first, second)] == [0, 0]  # type: ignore[union-attr]
