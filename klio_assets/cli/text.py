"""Untrusted text made safe to print on a terminal.

File names, paths, track IDs and failure reasons come from outside (a folder of audio, a
manifest, a Pub/Sub message, a decoder's message). Printed raw, a name carrying escape
sequences could rewrite the terminal (move the cursor, hide lines, set the title), and text in
square brackets would be taken for Rich markup. Everything the CLI prints from outside goes
through :func:`shown`; the ``--json`` output is JSON-escaped already.
"""

from __future__ import annotations

import re

#: C0 controls (newlines too: a reason is one line), DEL and the C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: object, *, markup: bool = False) -> str:
    """``text`` with control characters written as ``\\xNN`` (and Rich markup escaped when
    ``markup``: for strings printed through a Rich console).

    Parameters
    ----------
    text : object
        Converted with ``str``.
    markup : bool
        Escape ``[`` so that Rich prints it as it is.
    """
    safe = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    if not markup:
        return safe
    # Imported here: only text printed through a Rich console needs it (~10 ms of a rerun).
    from rich.markup import escape  # noqa: PLC0415

    return escape(safe)
