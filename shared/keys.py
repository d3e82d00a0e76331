"""Data keys for a process, from the key service (``services/keys``), held in memory briefly.

Two sources of keys, both ``shared.phi.KeySource``:

- ``KeyCache``, in every service (``shared.bus.connect_bus`` gives each bus one): asks the key
  service ``for_sealing``/``for_opening`` on a miss and keeps the answer in a bounded LRU (at
  most ``size`` keys) for ``ttl`` seconds, so a hot path makes no round trip once its key is
  cached. Answers "destroyed" are cached too, so a replay after an erasure does not ask again.
- ``DispatchKeys``, in an agent job: the keys of its dispatch's patient (or its tenant's key),
  fetched once by dispatch id while the dispatch is live and held for the job's life.

Both evict a key at once when the key service publishes ``DataKeyDestroyed`` for it (a core NATS
subscription to that event's subject, made with the first key fetched): a destroyed key stops
working in every process within moments. The TTL bounds the rest (an eviction missed while a
connection was down). Keys travel sealed to this process's own X25519 key (``shared.keys_api``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import keys_api as api
from shared import subjects
from shared.crypto import DataKey
from shared.events import CODEC, EventDecodeError
from shared.events.platform import DataKeyDestroyed
from shared.phi import KeysUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
TENANT_PURPOSE = "tenant"


def scope(tenant: str, patient_ref: str, purpose: str) -> tuple[str, str, str]:
    """Whose key: a patient's (personal or clinical), or the tenant's when there is no patient."""
    return (tenant, patient_ref, purpose) if patient_ref else (tenant, "", TENANT_PURPOSE)


class _Evictions:
    """The subscription to ``DataKeyDestroyed``: calls ``evict(tenant, key_id)`` for each."""

    def __init__(self, nc: NatsClient, evict: Callable[[str, str], None]) -> None:
        self.nc, self.evict = nc, evict
        self._subscription: Subscription | None = None

    async def ensure(self) -> None:
        if self._subscription is None:
            self._subscription = await self.nc.subscribe(
                subjects.type_filter(DataKeyDestroyed), cb=self._on_message
            )

    async def _on_message(self, message: Msg) -> None:
        try:
            event = CODEC.decode(message.data)
        except EventDecodeError:
            return
        if isinstance(event.data, DataKeyDestroyed):
            self.evict(event.tenant, event.data.key_id)


class KeyCache:
    """A service's data keys: the key service's answers, cached (see the module docstring)."""

    def __init__(
        self, nc: NatsClient, *, ttl: float = 60.0, size: int = 4096, timeout: float = 3.0
    ) -> None:
        self.nc, self.ttl, self.size, self.timeout = nc, ttl, size, timeout
        self.pair = api.ReplyKeyPair()
        self._scopes: OrderedDict[Hashable, tuple[float, DataKey]] = OrderedDict()
        self._ids: OrderedDict[Hashable, tuple[float, DataKey | None]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}
        self._evictions = _Evictions(nc, self.evict)
        # Round trips to the key service so far (the benchmarks and tests read it).
        self.fetches = 0

    async def for_sealing(self, tenant: str, patient_ref: str, purpose: str) -> DataKey:
        wanted = scope(tenant, patient_ref, purpose)
        hit = _get(self._scopes, wanted)
        if hit is not None:
            return hit

        async def fetch() -> DataKey:
            reply = await self._call(
                api.SealingKeyRequest(
                    tenant=tenant,
                    reply_key=self.pair.public,
                    patient_ref=patient_ref,
                    purpose=purpose,  # type: ignore[arg-type]
                )
            )
            key = self.pair.unwrap(reply, tenant)[0]
            self._put(self._scopes, wanted, key)
            self._put(self._ids, (tenant, key.key_id), key)
            return key

        return await self._once(("sealing", wanted), fetch)

    def held(self, tenant: str, patient_ref: str, purpose: str) -> DataKey | None:
        return _get(self._scopes, scope(tenant, patient_ref, purpose))

    async def for_opening(self, tenant: str, key_id: str) -> DataKey | None:
        entry = self._ids.get((tenant, key_id))
        if entry is not None and entry[0] > time.monotonic():
            self._ids.move_to_end((tenant, key_id))
            return entry[1]

        async def fetch() -> DataKey | None:
            try:
                reply = await self._call(
                    api.OpeningKeyRequest(tenant=tenant, reply_key=self.pair.public, key_id=key_id)
                )
            except api.KeyRequestError as error:
                if error.code != "unknown_key":
                    raise
                self._put(self._ids, (tenant, key_id), None)
                return None
            key = self.pair.unwrap(reply, tenant)[0]
            self._put(self._ids, (tenant, key_id), key)
            return key

        return await self._once(("opening", tenant, key_id), fetch)

    def evict(self, tenant: str, key_id: str) -> None:
        """Forget a destroyed key, and remember it is gone."""
        self._put(self._ids, (tenant, key_id), None)
        for wanted, (_, key) in list(self._scopes.items()):
            if key.key_id == key_id:
                del self._scopes[wanted]

    async def _call(self, request: api.Request) -> api.KeysReply:
        await self._evictions.ensure()
        self.fetches += 1
        return await api.call(self.nc, request, timeout=self.timeout)

    async def _once(self, what: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        """One round trip for concurrent misses of the same key."""
        pending = self._pending.get(what)
        if pending is not None:
            result: T = await asyncio.shield(pending)
            return result
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[what] = future
        try:
            value = await fetch()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            del self._pending[what]
        future.set_result(value)
        return value

    def _put(self, cache: OrderedDict[Hashable, Any], key: Hashable, value: Any) -> None:
        cache[key] = (time.monotonic() + self.ttl, value)
        cache.move_to_end(key)
        while len(cache) > self.size:
            cache.popitem(last=False)


def _get(cache: OrderedDict[Hashable, tuple[float, DataKey]], key: Hashable) -> DataKey | None:
    entry = cache.get(key)
    if entry is None:
        return None
    if entry[0] <= time.monotonic():
        del cache[key]
        return None
    cache.move_to_end(key)
    return entry[1]


class DispatchKeys:
    """An agent job's keys: its dispatch's, fetched once by dispatch id (see the module
    docstring). Everything the job seals is about its dispatch's patient."""

    def __init__(self, nc: NatsClient, tenant: str, dispatch_id: str, keys: list[DataKey]) -> None:
        self.tenant, self.dispatch_id = tenant, dispatch_id
        self._by_id = {key.key_id: key for key in keys}
        self._evictions = _Evictions(nc, self.evict)

    @classmethod
    async def fetch(
        cls, nc: NatsClient, *, tenant: str, dispatch_id: str, within: float = 5.0
    ) -> DispatchKeys:
        """Ask for the dispatch's keys. The key service learns of a dispatch from the event log,
        so a job that starts very fast may ask first: ``dispatch_not_live`` is retried for
        ``within`` seconds, then raised (KeyRequestError)."""
        pair = api.ReplyKeyPair()
        request = api.DispatchKeysRequest(
            tenant=tenant, reply_key=pair.public, dispatch_id=dispatch_id
        )
        deadline, delay = time.monotonic() + within, 0.05
        while True:
            try:
                reply = await api.call(nc, request)
                break
            except api.KeyRequestError as error:
                if error.code != "dispatch_not_live" or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        keys = cls(nc, tenant, dispatch_id, pair.unwrap(reply, tenant))
        await keys._evictions.ensure()
        return keys

    @property
    def patient_ref(self) -> str:
        return next((k.patient_ref for k in self._by_id.values() if k.patient_ref), "")

    async def for_sealing(self, tenant: str, patient_ref: str, purpose: str) -> DataKey:
        key = self.held(tenant, patient_ref, purpose)
        if key is None:
            raise api.KeyRequestError(
                "unknown_key", f"no {purpose} key of this dispatch for that data (or destroyed)"
            )
        return key

    def held(self, tenant: str, patient_ref: str, purpose: str) -> DataKey | None:
        if tenant != self.tenant or (patient_ref and patient_ref != self.patient_ref):
            return None  # data of another tenant or patient
        keys = {key.purpose: key for key in self._by_id.values()}
        return keys.get(purpose) or keys.get(TENANT_PURPOSE)

    async def for_opening(self, tenant: str, key_id: str) -> DataKey | None:
        key = self._by_id.get(key_id)
        return key if key is not None and tenant == self.tenant else None

    def evict(self, tenant: str, key_id: str) -> None:
        if tenant == self.tenant:
            self._by_id.pop(key_id, None)


__all__ = ["DispatchKeys", "KeyCache", "KeysUnavailableError", "scope"]
