"""Crash points: named places where a process can be made to die at once, for the fault suite.

``MEDIAI_CRASH_POINT=<name>`` in a process's environment (read once, when this module is first
imported) makes ``crash_point("<name>")`` log one line and end the process with ``os._exit``
(exit code ``CRASH_EXIT_CODE``): no ``finally`` blocks, no acknowledgements, no flushing, as a
power cut or the OOM killer would. Unset, a crash point costs one string comparison.

The points and where they sit (docs/reliability.md keeps the list):

- ``consumer.after_commit_before_ack``: a projection's transaction committed, its message not
  acknowledged yet (shared/consumer.py, ``Consumer.process``).
- ``outbox.after_publish_before_mark``: the relay published an outbox row, the row is not
  marked published yet (shared/outbox.py).
- ``dispatcher.after_create_dispatch``: LiveKit accepted the dispatch, ``dispatched`` is not
  published yet (services/dispatcher/consumers.py).
- ``dispatcher.after_publish_before_apply``: the HTTP edge published an event, its read model
  has not applied it yet (services/dispatcher/app.py).
- ``erasure.after_keys_destroyed``: a patient's personal key is destroyed, their rows are not
  emptied yet (services/scheduling/patients/erasure.py).
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

VARIABLE = "MEDIAI_CRASH_POINT"
# Distinctive, so a test tells a crash point from any other exit (and from a signal).
CRASH_EXIT_CODE = 86

_armed = os.environ.get(VARIABLE, "").strip()


def crash_point(name: str) -> None:
    """End the process here, now, if ``name`` is the crash point this process was started
    with; otherwise do nothing."""
    if name != _armed:
        return
    log.critical("crash point %s reached: exiting with code %d", name, CRASH_EXIT_CODE)
    # os._exit flushes nothing: get the line out first. The services log through a queue that a
    # thread drains (Litestar's QueueListenerHandler): stopping its listener drains it.
    for handler in logging.getLogger().handlers:
        listener = getattr(handler, "listener", None)
        if listener is not None:
            listener.stop()
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)
