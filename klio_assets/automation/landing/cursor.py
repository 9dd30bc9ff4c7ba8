"""The landing sensor's cursor: the last file taken, and the folders known unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass

from klio_assets.errors import ParameterError

#: Most folders remembered in the cursor (a deeper tree is listed in full every tick).
MAX_CURSOR_FOLDERS = 1000


@dataclass(frozen=True)
class LandingCursor:
    """What a landing cursor holds.

    Attributes
    ----------
    after : (int, str) or None
        ``(ctime_ns, uri)`` of the last file taken.
    listed : int or None
        The limit of the last complete listing (its folders are unchanged if older).
    folders : list of str or None
        The folders of that listing, relative to the landing folder.
    """

    after: tuple[int, str] | None = None
    listed: int | None = None
    folders: list[str] | None = None

    def dumps(self) -> str:
        """The cursor string stored by the daemon."""
        return json.dumps(
            {
                "after": list(self.after) if self.after else None,
                "listed": self.listed,
                "folders": self.folders,
            }
        )


def parse_cursor(cursor: str | None) -> LandingCursor:
    """Read a cursor stored by :meth:`LandingCursor.dumps` (empty: from the beginning).

    Raises
    ------
    ParameterError
        The cursor cannot be read.
    """
    if not cursor:
        return LandingCursor()
    try:
        state = json.loads(cursor)
        after = state.get("after")
        listed = state.get("listed")
        return LandingCursor(
            (int(after[0]), str(after[1])) if after else None,
            int(listed) if listed is not None else None,
            [str(f) for f in state["folders"]] if state.get("folders") is not None else None,
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ParameterError(f"landing sensor cursor {cursor!r} cannot be read: {exc}") from exc


def read_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The ``(ctime_ns, uri)`` high-water mark stored in a landing cursor."""
    return parse_cursor(cursor).after
