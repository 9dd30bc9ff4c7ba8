"""Pub/Sub for the landing sensor: pull, parse (the one confined parser), acknowledge, release.

Every message goes through :func:`klio_assets.catalog.discovery.parse_track_message`: local
paths only inside the allowed roots (the landing folder and ``KLIO_ASSETS_LANDING_ROOTS``),
object URIs without ``.``/``..`` segments, at most ``MAX_MESSAGE_BYTES``, JSON nesting
bounded. A refused message carries its reason; the tick acknowledges it with the rest (it can
never succeed, and left unacknowledged it would come back forever) and logs the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from klio_assets.catalog.discovery import parse_track_message
from klio_assets.errors import ParameterError

#: Messages pulled per Pub/Sub request, and acknowledged per request (the service's maximum).
PULL_BATCH = 1000

_log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What the landing tick needs of ``google.cloud.pubsub_v1.SubscriberClient``."""

    def pull(self, *, request: dict[str, Any], timeout: float | None = None) -> Any: ...

    def acknowledge(self, *, request: dict[str, Any]) -> Any: ...

    def modify_ack_deadline(self, *, request: dict[str, Any]) -> Any: ...


def pubsub_subscriber() -> Subscriber:
    """A real Pub/Sub subscriber client (honours ``PUBSUB_EMULATOR_HOST``).

    Raises
    ------
    ParameterError
        ``google-cloud-pubsub`` is not installed.
    """
    try:
        import google.cloud.pubsub_v1 as pubsub_v1  # noqa: PLC0415 - the gcp extra
    except ImportError as exc:
        raise ParameterError(
            "KLIO_ASSETS_LANDING_SUBSCRIPTION needs google-cloud-pubsub (pip install 'klio-assets[gcp]')"
        ) from exc
    client: Subscriber = pubsub_v1.SubscriberClient()
    return client


def resolve_subscriber(subscriber: Subscriber | Callable[[], Subscriber] | None) -> Subscriber:
    """A subscriber from what the caller gave: a client, a callable returning one, or None
    (the real client)."""
    if subscriber is None:
        return pubsub_subscriber()
    if hasattr(subscriber, "pull"):
        return cast(Subscriber, subscriber)
    return subscriber()


@dataclass
class Message:
    """One pulled Pub/Sub message, parsed.

    Exactly one of ``uri`` (a new file), ``track_id`` (alone: an already catalogued track)
    and ``error`` is the point of the message.

    Attributes
    ----------
    ack_id : str
    track_id, uri : str or None
        What :func:`~klio_assets.catalog.discovery.parse_track_message` read.
    error : str or None
        Why the message is refused.
    message_id : str
        The message's ID (names it in logs), or its ack ID.
    """

    ack_id: str
    track_id: str | None = None
    uri: str | None = None
    error: str | None = None
    message_id: str = ""

    @property
    def name(self) -> str:
        """How logs name the message."""
        return f"message {self.message_id or self.ack_id}"


def parse_message(
    ack_id: str,
    data: bytes,
    attributes: Mapping[str, str],
    *,
    roots: Sequence[str] = (),
    message_id: str = "",
) -> Message:
    """Read a track from a message (see :func:`~klio_assets.catalog.discovery.parse_track_message`);
    a refused message comes back with ``error`` set, never as an exception.

    Parameters
    ----------
    roots : sequence of str
        Folders local paths may point into (none: no local path is accepted).
    """
    try:
        parsed = parse_track_message(data, roots=roots, attributes=attributes)
    except ParameterError as exc:
        return Message(ack_id, error=str(exc), message_id=message_id)
    return Message(ack_id, track_id=parsed.track_id, uri=parsed.uri, message_id=message_id)


def pull_messages(
    subscriber: Subscriber, subscription: str, max_messages: int, *, roots: Sequence[str] = ()
) -> list[Message]:
    """Pull and parse up to ``max_messages`` without waiting for more (an idle tick must stay
    short)."""
    out: list[Message] = []
    while len(out) < max_messages:
        response = subscriber.pull(
            request={
                "subscription": subscription,
                "max_messages": min(PULL_BATCH, max_messages - len(out)),
                "return_immediately": True,
            },
            timeout=30,
        )
        received = list(response.received_messages)
        if not received:
            break
        for r in received:
            message = parse_message(
                r.ack_id,
                bytes(r.message.data),
                dict(r.message.attributes),
                roots=roots,
                message_id=str(getattr(r.message, "message_id", "") or ""),
            )
            if message.error is not None:
                _log.warning("landing: refused %s: %s", message.name, message.error)
            out.append(message)
    return out


def acknowledge(subscriber: Subscriber, subscription: str, messages: Sequence[Message]) -> None:
    """Acknowledge ``messages`` (Pub/Sub forgets them), in requests of :data:`PULL_BATCH`."""
    ack_ids = [m.ack_id for m in messages]
    for start in range(0, len(ack_ids), PULL_BATCH):
        subscriber.acknowledge(
            request={"subscription": subscription, "ack_ids": ack_ids[start : start + PULL_BATCH]}
        )


def release(subscriber: Subscriber, subscription: str, messages: Sequence[Message]) -> None:
    """Hand ``messages`` back for redelivery at once (a dry run only looked at them)."""
    ack_ids = [m.ack_id for m in messages]
    for start in range(0, len(ack_ids), PULL_BATCH):
        subscriber.modify_ack_deadline(
            request={
                "subscription": subscription,
                "ack_ids": ack_ids[start : start + PULL_BATCH],
                "ack_deadline_seconds": 0,
            }
        )
