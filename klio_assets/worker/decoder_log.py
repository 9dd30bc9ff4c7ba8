"""What C decoders print on the process's stderr, kept per decode instead of on the terminal.

libsndfile's MP3 decoder (libmpg123) writes its complaints straight to file descriptor 2
(``[src/libmpg123/layer3.c:...] error: part2_3_length ...``, ``Warning: Xing stream size
off``, ``Note: Trying to resync...``): Python's ``sys.stderr`` never sees them, so they can
only be caught at the descriptor. :func:`capture` does that around each call into libsndfile
(opening a file, reading one block), never around the code that consumes the blocks. Only
decodes by a library that prints (:data:`PRINTING_CODECS`: MP3) are captured block by block;
every probe (``sf.info``, which may try the MP3 reader on any file) is one window:

* while any capture window is open, fd 2 points at a pipe (dup2, reference-counted under a
  lock); when the last one closes it points at the real stderr again, so a crash report or a
  traceback printed outside a window goes where it always went;
* each window writes a begin and an end marker into the pipe, so the reader thread knows
  which decodes were inside a library call when a line was written (a C library writes to
  stderr unbuffered, synchronously, in the calling thread) and gives the line to each;
* lines that look like Python's own output (a logging record, a traceback) are passed on to
  the real stderr.

With ``KLIO_VERBOSE=1`` in the environment (``klio-assets --verbose``), captured
lines are kept and also passed on to the real stderr.

Decodes run in several threads at once (the local runner's lanes), which is why windows are
one library call long: two decodes share a line only if both were inside libsndfile when it
was written.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
from collections.abc import Iterator

#: libsndfile subtypes decoded by a library that prints on fd 2 (libmpg123). libFLAC,
#: libvorbis, libopus and libsndfile's own readers report through return codes (libsndfile
#: keeps its messages in an internal log): their decodes are not captured block by block.
PRINTING_CODECS = frozenset({"MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"})
#: Lines kept per decode (a corrupt file can make libmpg123 complain once per frame).
MAX_LINES = 50
#: Longest line kept, in characters.
MAX_LINE = 300
_MARK = b"\x00klio-decoder-log:"
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
_done: dict[int, threading.Event] = {}


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
            os.write(2, _MARK + b"+%d\n" % self.token)
        try:
            yield
        finally:
            with _lock:
                os.write(2, _MARK + b"-%d\n" % self.token)
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
        _done.clear()
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
    active: set[int] = set()
    with os.fdopen(_state["read_fd"], "rb", buffering=0) as pipe:
        pending = b""
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                return
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                _dispatch(raw, active)


def _dispatch(raw: bytes, active: set[int]) -> None:
    at = raw.find(_MARK)
    if at >= 0:  # a marker, maybe after a partial line a library wrote without a newline
        before, marker = raw[:at], raw[at + len(_MARK) :]
        if before.strip():
            _dispatch(before, active)
        sign, token = marker[:1], int(marker[1:] or 0)
        if sign == b"+":
            active.add(token)
        elif sign == b"-":
            active.discard(token)
        elif sign == b"=" and token in _done:
            _done[token].set()
        return
    text = re.sub(r"[\x00-\x1f\x7f]", "", raw.decode("utf-8", "replace")).strip()
    if not text:
        return
    if not active or _PYTHON.match(text) or _state["echo"]:
        os.write(_state["saved_fd"], raw + b"\n")
    if not active or _PYTHON.match(text):
        return
    for token in active:
        kept = _lines.get(token)
        if kept is not None and len(kept) < MAX_LINES:
            kept.append(text[:MAX_LINE])


@contextlib.contextmanager
def no_capture() -> Iterator[Capture]:
    """Like :func:`capture` for a decoder that prints nothing: windows cost nothing, no
    lines."""
    yield Capture(0)


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
    _done[token] = threading.Event()
    result = Capture(token)
    try:
        yield result
    finally:
        # A last marker through the pipe: once the reader has seen it, it has seen every
        # line this decode's calls wrote before it.
        with _lock:
            os.write(_state["write_fd"], _MARK + b"=%d\n" % token)
        _done[token].wait(timeout=5.0)
        result.lines = _lines.pop(token, [])
        del _done[token]
