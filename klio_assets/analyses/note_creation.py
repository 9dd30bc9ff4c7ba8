"""Basic Pitch's note creation with memory flat in track length.

``basic_pitch.note_creation.output_to_notes_polyphonic`` needs the whole track's note and
onset activations in memory and makes about seven float64 copies of them (inferred onsets,
peak matrix, remaining energy): +25 MB of peak memory per minute of audio. This module does
the same computation, step for step and value for value, with the activations in files under
a temporary directory and only a few chunks of rows in memory at a time:

* the activations are appended to float32 files as the model produces them
  (:class:`ActivationFiles`);
* the inferred onsets (``get_infered_onsets``) and their peaks (``scipy.signal.argrelmax``
  along time) are local except for two global maxima: a first pass over the chunks finds the
  maxima, a second computes each chunk's onsets with the rows of context it needs, in the
  package's own float64 arithmetic, and keeps only the onset candidates (a few per second);
* the remaining energy is a copy of the note file, read and written through a small cache of
  chunks (:class:`_Energy`); the note loop walks the candidates backwards in time as the
  package does; the "melodia trick" takes the global maximum, first in row-major order as
  ``np.argmax`` does, from per-chunk maxima updated as cells are zeroed.

Comparisons are made in float64 as the package makes them (its remaining energy is a float64
copy of the float32 activations); amplitudes are ``np.mean`` over the same float32 column
slices. A test checks the notes are identical to the package's own function on real audio and
on a long file joined from corpus tracks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


__all__ = ["ActivationFiles", "notes_from_files"]

BINS = 88
MAX_FREQ_IDX = 87
MIDI_OFFSET = 21
ENERGY_TOL = 11
#: Rows per chunk: 2048 frames (24 s of audio, 704 kB of float32 per array).
CHUNK = 2048
#: Chunks of remaining energy kept in memory.
CACHE = 8
_ITEM = BINS * 4  # bytes per float32 row


class ActivationFiles:
    """Note and onset activations ``(n, 88)`` float32, appended to files in a temporary
    directory (removed by :meth:`close`)."""

    def __init__(self, parent: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="klio-notes-", dir=parent)
        self.paths = {name: os.path.join(self.dir, f"{name}.f32") for name in ("note", "onset")}
        self._files = {name: open(path, "wb") for name, path in self.paths.items()}
        self.rows = 0

    def append(self, note: np.ndarray, onset: np.ndarray) -> None:
        """Add rows of both activations."""
        import numpy as np  # noqa: PLC0415

        self._files["note"].write(np.ascontiguousarray(note, np.float32).tobytes())
        self._files["onset"].write(np.ascontiguousarray(onset, np.float32).tobytes())
        self.rows += len(note)

    def finish(self, rows: int) -> None:
        """Close the files for writing, keeping their first ``rows`` rows."""
        for name, fh in self._files.items():
            fh.close()
            os.truncate(self.paths[name], min(rows, self.rows) * _ITEM)
        self.rows = min(rows, self.rows)

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of an activation (clipped to the file)."""
        import numpy as np  # noqa: PLC0415

        start, stop = max(0, start), min(self.rows, stop)
        if stop <= start:
            return np.zeros((0, BINS), np.float32)
        data = np.fromfile(
            self.paths[name], np.float32, (stop - start) * BINS, offset=start * _ITEM
        )
        return data.reshape(-1, BINS)

    def close(self) -> None:
        """Remove the files."""
        for fh in self._files.values():
            fh.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _frame_diff(files: ActivationFiles, start: int, stop: int) -> np.ndarray:
    """``get_infered_onsets``'s clipped frame differences of rows ``[start, stop)``
    (float64, before rescaling)."""
    import numpy as np  # noqa: PLC0415

    lead = min(start, 2)
    frames = files.read("note", start - lead, stop).astype(np.float64)
    # the package prepends zeros: rows before the track are zero
    padded = np.concatenate([np.zeros((2 - lead, BINS)), frames])
    d1 = padded[2:] - padded[1:-1]
    d2 = padded[2:] - padded[:-2]
    diff = np.min([d1, d2], axis=0)
    diff[diff < 0] = 0
    if start < 2:
        diff[: 2 - start, :] = 0
    return diff


def _maxima(files: ActivationFiles) -> tuple[Any, Any]:
    """``np.max(onsets)`` (float32) and ``np.max(frame_diff)`` (float64) over the track."""
    import numpy as np  # noqa: PLC0415

    onset_max = None
    diff_max = None
    for start in range(0, files.rows, CHUNK):
        stop = min(files.rows, start + CHUNK)
        o = np.max(files.read("onset", start, stop))
        d = np.max(_frame_diff(files, start, stop))
        onset_max = o if onset_max is None else max(onset_max, o)
        diff_max = d if diff_max is None else max(diff_max, d)
    return onset_max, diff_max


def _onsets(files: ActivationFiles, onset_thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """Onset candidates (time, bin) in row-major order: peaks along time of the inferred
    onsets at or above ``onset_thresh``."""
    import numpy as np  # noqa: PLC0415

    n = files.rows
    onset_max, diff_max = _maxima(files)
    times: list[np.ndarray] = []
    bins: list[np.ndarray] = []
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        lo, hi = max(0, start - 1), min(n, stop + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = onset_max * _frame_diff(files, lo, hi) / diff_max
        inferred = np.max([files.read("onset", lo, hi), diff], axis=0)
        # argrelmax(axis=0, mode="clip"): strictly above both neighbours; the first and
        # last frames of the track compare with themselves and are never peaks
        first, last = max(start, 1), min(stop, n - 1)
        if last <= first:
            continue
        mid = inferred[first - lo : last - lo]
        peaks = (mid > inferred[first - lo - 1 : last - lo - 1]) & (
            mid > inferred[first - lo + 1 : last - lo + 1]
        )
        t, f = np.nonzero(peaks & (mid >= onset_thresh))
        times.append(t + first)
        bins.append(f)
    if not times:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(times), np.concatenate(bins)


class _Energy:
    """The remaining energy (a float32 copy of the note activations on disk), read and
    written through a cache of chunks, with each chunk's maximum kept current."""

    def __init__(self, files: ActivationFiles):
        import numpy as np  # noqa: PLC0415

        self.rows = files.rows
        self.path = os.path.join(files.dir, "energy.f32")
        shutil.copyfile(files.paths["note"], self.path)
        self.fh = open(self.path, "r+b")
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.dirty: set[int] = set()
        count = (self.rows + CHUNK - 1) // CHUNK
        self.maxima = np.empty(count, np.float32)
        for c in range(count):
            self.maxima[c] = np.max(self._load(c))
        self.stale: set[int] = set()

    def _load(self, c: int) -> np.ndarray:
        import numpy as np  # noqa: PLC0415

        start = c * CHUNK
        stop = min(self.rows, start + CHUNK)
        self.fh.seek(start * _ITEM)
        data = np.frombuffer(bytearray(self.fh.read((stop - start) * _ITEM)), np.float32)
        return data.reshape(-1, BINS)

    def chunk(self, c: int) -> np.ndarray:
        """Chunk ``c`` (rows ``c * CHUNK`` on), from the cache or the file."""
        data = self.cache.get(c)
        if data is not None:
            self.cache.move_to_end(c)
            return data
        data = self._load(c)
        self.cache[c] = data
        while len(self.cache) > CACHE:
            old, evicted = self.cache.popitem(last=False)
            if old in self.dirty:
                self.fh.seek(old * CHUNK * _ITEM)
                self.fh.write(evicted.tobytes())
                self.dirty.discard(old)
        return data

    def column(self, f: int, start: int, step: int) -> Iterator[float]:
        """Values of bin ``f`` from row ``start`` forwards (``step=1``) or backwards
        (``step=-1``) to the end of the track, as Python floats (float64)."""
        i = start
        while 0 <= i < self.rows:
            c, r = divmod(i, CHUNK)
            data = self.chunk(c)
            if step > 0:
                yield from data[r:, f].tolist()
                i = (c + 1) * CHUNK
            else:
                yield from data[r::-1, f].tolist()
                i = c * CHUNK - 1

    def zero(self, start: int, stop: int, f: int, neighbours: bool = True) -> None:
        """Zero rows ``[start, stop)`` of bin ``f`` (and of the bins beside it)."""
        lo = max(f - 1, 0) if neighbours else f
        hi = min(f + 1, MAX_FREQ_IDX) if neighbours else f
        i = start
        while i < stop:
            c, r = divmod(i, CHUNK)
            end = min(stop, (c + 1) * CHUNK)
            self.chunk(c)[r : r + end - i, lo : hi + 1] = 0
            self.dirty.add(c)
            self.stale.add(c)
            i = end

    def argmax(self) -> tuple[float, int, int]:
        """The maximum and its first (row-major) position, as ``np.argmax`` finds it."""
        import numpy as np  # noqa: PLC0415

        for c in self.stale:
            self.maxima[c] = np.max(self.chunk(c))
        self.stale.clear()
        c = int(np.argmax(self.maxima))
        data = self.chunk(c)
        r, f = np.unravel_index(int(np.argmax(data)), data.shape)
        return float(self.maxima[c]), c * CHUNK + int(r), int(f)

    def set(self, i: int, f: int, value: float) -> None:
        c, r = divmod(i, CHUNK)
        self.chunk(c)[r, f] = value
        self.dirty.add(c)
        self.stale.add(c)

    def close(self) -> None:
        self.fh.close()


def _amplitude(files: ActivationFiles, start: int, stop: int, f: int) -> float:
    """``np.mean(frames[start:stop, f])`` over the same float32 column slice."""
    import numpy as np  # noqa: PLC0415

    return float(np.mean(files.read("note", start, stop)[:, f]))


def _scan(
    values: Iterator[float], first: int, bound: int, step: int, thresh: float
) -> tuple[int, int]:
    """The package's ``while i < bound and k < energy_tol`` walk: the final ``i`` and ``k``."""
    i, k = first, 0
    for value in values:
        if not ((i < bound) if step > 0 else (i > bound)) or k >= ENERGY_TOL:
            break
        k = k + 1 if value < thresh else 0
        i += step
    return i, k


def notes_from_files(
    files: ActivationFiles,
    *,
    onset_thresh: float,
    frame_thresh: float,
    min_note_len: int,
    melodia_trick: bool = True,
) -> list[tuple[int, int, int, float]]:
    """``output_to_notes_polyphonic`` (with inferred onsets, no frequency limits) of the
    activations in ``files``: notes as (start frame, end frame, MIDI pitch, amplitude)."""
    n = files.rows
    if n == 0:
        return []
    onset_t, onset_f = _onsets(files, onset_thresh)
    energy = _Energy(files)
    notes: list[tuple[int, int, int, float]] = []
    try:
        for t0, f in zip(onset_t[::-1].tolist(), onset_f[::-1].tolist(), strict=True):
            if t0 >= n - 1:
                continue
            i, k = _scan(energy.column(f, t0 + 1, 1), t0 + 1, n - 1, 1, frame_thresh)
            i -= k
            if i - t0 <= min_note_len:
                continue
            energy.zero(t0, i, f)
            notes.append((t0, i, f + MIDI_OFFSET, _amplitude(files, t0, i, f)))
        if melodia_trick:
            while True:
                peak, i_mid, f = energy.argmax()
                if not peak > frame_thresh:
                    break
                energy.set(i_mid, f, 0.0)
                # forward: every row visited is zeroed after it is read, so the walk reads
                # the values as they were; zero the visited rows afterwards
                i, k = _scan(energy.column(f, i_mid + 1, 1), i_mid + 1, n - 1, 1, frame_thresh)
                energy.zero(i_mid + 1, i, f)
                i_end = i - 1 - k
                i, k = _scan(energy.column(f, i_mid - 1, -1), i_mid - 1, 0, -1, frame_thresh)
                energy.zero(i + 1, i_mid, f)
                i_start = i + 1 + k
                if i_end - i_start <= min_note_len:
                    continue
                notes.append(
                    (i_start, i_end, f + MIDI_OFFSET, _amplitude(files, i_start, i_end, f))
                )
    finally:
        energy.close()
    return notes
