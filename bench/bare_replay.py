"""The baseline of the billing replay benchmark: what a user would write with nats-py alone.

One ordered push consumer (nats-py's own, one callback per message) over the same subjects,
each payload decoded with the same codec and folded with the same metering, and the usage rows
written with COPY into an unlogged table, flushed every ``FLUSH_ROWS`` as the replay does. No
intervals, inbox or monthly totals are written (the rebuild writes those too), so the
baseline's writing is, if anything, lighter.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import nats
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.billing.fold import FLUSH_ROWS, ROW_COLUMNS
from services.billing.meters import DEFAULT, METERED_EVENTS
from services.billing.projector import Projector
from shared import subjects
from shared.bus import nats_options
from shared.config import Settings
from shared.events import CODEC, EVENTS_STREAM, EventDecodeError

TABLE = "bare_usage"


async def bare_replay(settings: Settings) -> tuple[int, float]:
    """Read, fold and COPY the whole stream; returns (events read, seconds)."""
    started = time.monotonic()
    nc = await nats.connect(**nats_options(settings))
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS billing_replay.{TABLE}")
        await conn.execute(
            f"CREATE UNLOGGED TABLE billing_replay.{TABLE} (tenant text, window_start"
            " timestamptz, meter text, room text, dispatch text, quantity bigint,"
            " first_sequence bigint, last_sequence bigint)"
        )
        js = nc.jetstream()
        stream = subjects.stream_name(EVENTS_STREAM)
        end = (await js.stream_info(stream)).state.last_seq
        projector = Projector(DEFAULT)
        wanted = {subjects.unversioned_type_of(t) for t in METERED_EVENTS}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def copy_rows() -> None:
            await conn.copy_records_to_table(
                TABLE,
                schema_name="billing_replay",
                records=projector.take_rows(),
                columns=ROW_COLUMNS,
            )

        async def on_message(message: Msg) -> None:
            sequence = message.metadata.sequence.stream
            if subjects.unversioned_type(message.subject.encode()) in wanted:
                try:
                    projector.apply(sequence, CODEC.decode(message.data))
                except EventDecodeError:
                    projector.undecodable(sequence)
            if projector.held >= FLUSH_ROWS:
                await copy_rows()
            if sequence >= end and not done.done():
                done.set_result(None)

        # One filter and the types picked here, as the replay does: JetStream serves a list of
        # per-type filters ten times slower (subjects.stream_filter).
        subscription = await js.subscribe(
            subjects.stream_filter(EVENTS_STREAM),
            stream=stream,
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        await done
        await subscription.unsubscribe()
        await copy_rows()
        return projector.stats.events, time.monotonic() - started
    finally:
        await conn.close()
        await nc.close()
