"""New tracks arriving: a landing folder (or ``gs://`` prefix) and a Pub/Sub subscription.

The landing sensor (:mod:`klio_assets.sensors`) calls :func:`landing_tick` once per tick
(through :class:`klio_assets.automation.service.Automation`). It registers what arrived since
the cursor, in one batch, and asks for one run per contiguous range of the new tracks (one
Beam job for the whole batch, every selected analysis). One concern per module:

* :mod:`~klio_assets.automation.landing.folder`: listing a local folder;
* :mod:`~klio_assets.automation.landing.objects`: listing an object-store prefix;
* :mod:`~klio_assets.automation.landing.listing`: one listing in cursor order (exactly once
  across restarts: why ``ctime`` and a settle time);
* :mod:`~klio_assets.automation.landing.cursor`: the sensor's cursor;
* :mod:`~klio_assets.automation.landing.pubsub`: pulling, parsing (the one confined parser,
  :func:`klio_assets.catalog.discovery.parse_track_message`), acknowledging;
* :mod:`~klio_assets.automation.landing.tick`: the tick (register, acknowledge, ranges);
* run requests: :mod:`klio_assets.automation.runs` (shared with the other modes).
"""

from klio_assets.automation.landing.cursor import MAX_CURSOR_FOLDERS, read_cursor
from klio_assets.automation.landing.listing import (
    CLOCK_MARGIN_S,
    Landed,
    Listing,
    list_landing,
    scan_landing,
)
from klio_assets.automation.landing.pubsub import (
    PULL_BATCH,
    Message,
    Subscriber,
    parse_message,
    pubsub_subscriber,
    pull_messages,
)
from klio_assets.automation.landing.tick import LandingTick, landing_tick
from klio_assets.automation.runs import TRIGGER_TAG, run_requests

__all__ = [
    "CLOCK_MARGIN_S",
    "MAX_CURSOR_FOLDERS",
    "PULL_BATCH",
    "TRIGGER_TAG",
    "Landed",
    "LandingTick",
    "Listing",
    "Message",
    "Subscriber",
    "landing_tick",
    "list_landing",
    "parse_message",
    "pubsub_subscriber",
    "pull_messages",
    "read_cursor",
    "run_requests",
    "scan_landing",
]
