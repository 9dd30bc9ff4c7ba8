"""Listing a landing prefix in an object store (``gs://``, ``s3://``) with creation times."""

from __future__ import annotations

from datetime import datetime

from klio_assets.catalog.discovery import is_audio_name
from klio_assets.errors import StorageError


def list_objects(prefix: str) -> list[tuple[int, str]]:
    """``(created_ns, uri)`` of every audio object under ``prefix``.

    The creation time plays the role of a local file's ctime (an overwrite is a new object).

    Raises
    ------
    StorageError
        The prefix cannot be listed, or the store gives no creation time.
    """
    import fsspec  # noqa: PLC0415 - the store's client is loaded only for remote landings

    protocol = prefix.split("://", 1)[0]
    try:
        fs = fsspec.filesystem(protocol)
        entries = fs.find(prefix, detail=True)
    except (OSError, ValueError, ImportError) as exc:
        raise StorageError(f"cannot list landing prefix {prefix}: {exc}") from exc
    found = []
    for path, info in entries.items():
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if not is_audio_name(name):
            continue
        created = info.get("timeCreated") or info.get("LastModified") or info.get("mtime")
        if isinstance(created, str):
            created = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        elif isinstance(created, datetime):
            created = created.timestamp()
        if created is None:
            raise StorageError(
                f"{protocol}://{path}: the store gives no creation time to order files by"
            )
        found.append((int(float(created) * 1e9), f"{protocol}://{path}"))
    return found
