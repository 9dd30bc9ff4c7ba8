"""What C decoders print on the process's stderr, kept per decode instead of on the terminal.

libsndfile's MP3 decoder (libmpg123) writes its complaints straight to file descriptor 2
(``[src/libmpg123/layer3.c:...] error: part2_3_length ...``, ``Warning: Xing stream size
off``, ``Note: Trying to resync...``): Python's ``sys.stderr`` never sees them, so they can
only be caught at the descriptor. :func:`capture` does that around each call into libsndfile
(opening a file, reading one block), never around the code that consumes the blocks:

* while any capture window is open, fd 2 points at a pipe (dup2, reference-counted under a
  lock); when the last one closes it points at the real stderr again, so a crash report or a
  traceback printed outside a window goes where it always went;
* the pipe is only ever read under that lock, and a window empties it (a non-blocking read)
  before it closes, so a line is given to the windows open when it was read, which include
  the one whose library call wrote it (a C library writes to stderr unbuffered,
  synchronously, in the calling thread); a reader thread, woken only when something is
  written, empties it too, so a library that prints more than the pipe holds in one call
  never blocks. A window that printed nothing costs a lock, two ``dup2`` and one read that
  finds nothing (a begin and an end marker written through the pipe per window, read by a
  thread woken each time, cost ~8 % of a FLAC or Vorbis decode's CPU);
* lines that look like Python's own output (a logging record, a traceback) are passed on to
  the real stderr.

With ``KLIO_VERBOSE=1`` in the environment (``klio-assets --verbose``), captured
lines are kept and also passed on to the real stderr.

Decodes run in several threads at once (the local runner's lanes), which is why windows are
one library call long: two decodes share a line only if both were inside libsndfile when it
was read.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import select
import threading
from collections.abc import Iterator

#: Lines kept per decode (a corrupt file can make libmpg123 complain once per frame).
MAX_LINES = 50
#: Longest line kept, in characters.
MAX_LINE = 300
#: The environment variable that makes captured lines reach the real stderr too.
VERBOSE_ENV = "KLIO_VERBOSE"
#: Python's own output that may pass through the pipe while a window is open elsewhere.
_PYTHON = re.compile(r"^(?:[A-Z]+:[\w.]*:|Traceback |  File |\w+(?:Error|Warning|Exception):)")

_lock = threading.Lock()
_counter = itertools.count(1)
_state: dict[str, int] = {
    "open": 0, "read_fd": -1, "write_fd": -1, "saved_fd": -1, "echo": 0, "pid": -1, "off": 0,
}  # fmt: skip
_lines: dict[int, list[str]] = {}
#: Tokens of the windows open now, and a line read without its end yet.
_active: set[int] = set()
_pending = bytearray()


class Capture:
    """The lines one decode's library calls printed (see :func:`capture`).

    Attributes
    ----------
    lines : list of str
        In the order printed, at most :data:`MAX_LINES`, each at most :data:`MAX_LINE`
        characters, control characters removed.
    """

    def __init__(self, token: int):
        self.token = token
        self.lines: list[str] = []

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        """Around one library call: what it prints on fd 2 is this decode's."""
        if not self.token:  # capturing is off in this process (no usable fd 2)
            yield
            return
        with _lock:
            if _state["open"] == 0:
                _follow_stderr()
                os.dup2(_state["write_fd"], 2)
            _state["open"] += 1
            _active.add(self.token)
        try:
            yield
        finally:
            with _lock:
                # what this call printed; a line left without its end is whole when no other
                # call is still inside the library
                _drain(final=_state["open"] == 1)
                _active.discard(self.token)
                _state["open"] -= 1
                if _state["open"] == 0:
                    os.dup2(_state["saved_fd"], 2)


def _start() -> bool:
    """Make the pipe and its reader thread (once per process); False when capturing is off."""
    if _state["pid"] != os.getpid() and _state["pid"] != -1:
        # A forked child: the reader thread stayed in the parent. Point fd 2 back where it
        # went before any window the fork caught open, and start afresh.
        if _state["open"]:
            os.dup2(_state["saved_fd"], 2)
        _state.update(open=0, read_fd=-1, write_fd=-1, pid=-1)
        _lines.clear()
        _active.clear()
        _pending.clear()
    if _state["off"]:
        return False
    if _state["read_fd"] >= 0:
        return True
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon's closed fd 2): nothing to keep clean
        _state["off"] = 1
        return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    echo = int(os.environ.get(VERBOSE_ENV, "") not in ("", "0"))
    _state.update(read_fd=read_fd, write_fd=write_fd, saved_fd=saved, echo=echo, pid=os.getpid())
    threading.Thread(target=_read, name="klio-decoder-log", daemon=True).start()
    return True


def _follow_stderr() -> None:
    """Keep ``saved_fd`` on what fd 2 is now: someone (a test's capture, a daemon) may have
    pointed fd 2 elsewhere since the last window; restoring the old target would undo that."""
    now = os.fstat(2)
    saved = os.fstat(_state["saved_fd"])
    if (now.st_dev, now.st_ino) != (saved.st_dev, saved.st_ino):
        # The previous copy stays open: the reader may still be passing a line on to it.
        _state["saved_fd"] = os.dup(2)


def _read() -> None:
    """The reader thread: sleeps until something is written, then empties the pipe."""
    poller = select.poll()
    poller.register(_state["read_fd"], select.POLLIN)
    while True:
        poller.poll()
        with _lock:
            _drain()


def _drain(*, final: bool = False) -> None:
    """Read what the pipe holds and give its lines to the windows open now (under
    ``_lock``); ``final``: a window closes, so a line its call left without an end is whole."""
    while True:
        try:
            chunk = os.read(_state["read_fd"], 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        _pending.extend(chunk)
    if not _pending:
        return
    *complete, rest = bytes(_pending).split(b"\n")
    _pending[:] = rest
    if final and rest:
        complete.append(rest)
        _pending.clear()
    for raw in complete:
        _dispatch(raw)


def _dispatch(raw: bytes) -> None:
    text = re.sub(r"[\x00-\x1f\x7f]", "", raw.decode("utf-8", "replace")).strip()
    if not text:
        return
    if not _active or _PYTHON.match(text) or _state["echo"]:
        os.write(_state["saved_fd"], raw + b"\n")
    if not _active or _PYTHON.match(text):
        return
    for token in _active:
        kept = _lines.get(token)
        if kept is not None and len(kept) < MAX_LINES:
            kept.append(text[:MAX_LINE])


@contextlib.contextmanager
def capture() -> Iterator[Capture]:
    """One decode's capture: use :meth:`Capture.window` around each libsndfile call; when
    the block ends, :attr:`Capture.lines` holds what those calls printed."""
    with _lock:
        on = _start()
    if not on:
        yield Capture(0)
        return
    token = next(_counter)
    _lines[token] = []
    result = Capture(token)
    try:
        yield result
    finally:
        # every window emptied the pipe before it closed: nothing of this decode is left in it
        with _lock:
            result.lines = _lines.pop(token, [])
