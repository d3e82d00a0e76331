"""``mediai keys``: the key-encryption keyring and the data keys it wraps (docs/privacy.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import click

from services.keys import kek as keyring_file
from services.keys import store
from services.keys.kek import KekError, LocalKeyring
from services.keys.service import KeyService
from shared.config import ConfigError, Settings
from shared.db import create_pool

T = TypeVar("T")


def _with_keys(main: Callable[[LocalKeyring, asyncpg.Pool], Awaitable[T]]) -> T:
    from deploy.cli import fail, run, settings_or_exit

    settings: Settings = settings_or_exit()
    try:
        keyring = LocalKeyring.load(settings)
    except (KekError, ConfigError) as error:
        fail(str(error), code=2)

    async def go() -> T:
        pool = await create_pool(settings, max_size=2, statement_timeout=None)
        try:
            return await main(keyring, pool)
        finally:
            await pool.close()

    try:
        return run(go)
    except KekError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot reach Postgres at DATABASE_URL: {error}")


@click.group()
def keys() -> None:
    """The key-encryption key (KEK) and the patients' data keys."""


@keys.command("status")
def status() -> None:
    """The KEKs of the keyring (current first), and the data keys each wraps."""

    async def main(keyring: LocalKeyring, pool: asyncpg.Pool) -> None:
        per_kek = await store.keys_per_kek(pool)
        source = "MEDIAI_KEK" if not keyring.from_file else str(keyring.path)
        click.echo(f"keyring: {source}")
        for number, kek_id in enumerate(keyring.ids):
            role = "current" if number == 0 else "old    "
            click.echo(f"  {role}  {kek_id:<24} wraps {per_kek.pop(kek_id, 0)} live data key(s)")
        for kek_id, count in per_kek.items():
            click.echo(
                f"  MISSING  {kek_id:<24} wraps {count} live data key(s): not in the keyring"
            )
        for what, count in (await store.counts(pool)).items():
            click.echo(f"data keys {what}: {count}")

    _with_keys(main)


@keys.command("rotate")
def rotate() -> None:
    """Make a new KEK current and re-wrap every data key with it. With a keyring file, the new
    KEK is generated and put first in the file (the running key service picks it up); with
    MEDIAI_KEK, put the new KEK first yourself and restart the key service before this. The old
    KEK stays until 'mediai keys retire'."""

    async def main(keyring: LocalKeyring, pool: asyncpg.Pool) -> None:
        if keyring.from_file:
            new_id = keyring_file.prepend_new_kek(keyring.path)
            keyring.reload()
            click.echo(f"new key-encryption key {new_id} in {keyring.path}")
        done = await KeyService(pool, keyring).rewrap_all()
        click.echo(f"re-wrapped {done} data key(s) with {keyring.current_id}")

    _with_keys(main)


@keys.command("retire")
def retire() -> None:
    """Drop the old KEKs that wrap no data key any more from the keyring file (a backup or WAL
    segment holding keys they wrapped becomes unreadable once no copy of them is left)."""

    async def main(keyring: LocalKeyring, pool: asyncpg.Pool) -> None:
        from deploy.cli import fail

        if not keyring.from_file:
            fail("MEDIAI_KEK is set: remove the old KEKs from it yourself", code=2)
        per_kek = await store.keys_per_kek(pool)
        old = set(keyring.ids[1:])
        busy = {kek_id: per_kek[kek_id] for kek_id in old if per_kek.get(kek_id)}
        if busy:
            fail(f"still wrapping data keys: {busy}; run 'mediai keys rotate' first")
        keyring_file.drop_keks(keyring.path, old)
        click.echo(f"retired {len(old)} old key-encryption key(s)" if old else "nothing to retire")

    _with_keys(main)
