"""The values an analysis receives and returns: decoded audio, a stream of it, the track, a result.

Plain data with no dependency on the rest of the framework, so that the authoring API
(:mod:`klio_assets.worker.analysis`) and the output kinds (:mod:`klio_assets.worker.outputs`)
both build on them without importing each other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from klio_assets.errors import ParameterError
from klio_assets.worker.audio import SourceInfo

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


__all__ = ["Audio", "AudioStream", "Result", "TrackContext", "lockstep_streams"]


@dataclass(frozen=True)
class Audio:
    """Decoded audio held in memory.

    Attributes
    ----------
    samples : np.ndarray [shape=(n,) or (channels, n)], float32
        Mono audio is one-dimensional (librosa's layout).
    sample_rate : int
        Hz.
    """

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        """Number of channels."""
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[-1])

    @property
    def duration_s(self) -> float:
        """Seconds."""
        return self.frames / self.sample_rate

    def mono(self) -> np.ndarray:
        """The samples as one channel, shape ``(n,)``: the mean of the channels."""
        return self.samples if self.samples.ndim == 1 else self.samples.mean(axis=0)

    def frame_blocks(self, block_frames: int = 65536) -> Iterator[np.ndarray]:
        """The samples as ``(n, channels)`` blocks, the layout writers take."""
        frames = self.samples[:, None] if self.samples.ndim == 1 else self.samples.T
        for start in range(0, len(frames), block_frames):
            yield frames[start : start + block_frames]


class AudioStream:
    """Decoded audio delivered block by block, so that memory does not grow with duration.

    Iterating yields float32 blocks shaped ``(n,)`` for mono and ``(channels, n)`` otherwise.
    After iteration, :attr:`frames` is the number of frames delivered. A stream can be
    iterated once.

    Parameters
    ----------
    frame_blocks : iterator of np.ndarray [shape=(n, channels)]
        The blocks in the writers' layout.
    sample_rate : int
        Hz.
    channels : int
    """

    def __init__(self, frame_blocks: Iterator[np.ndarray], *, sample_rate: int, channels: int):
        self._blocks = frame_blocks
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames = 0
        self._used = False

    def _take(self) -> Iterator[np.ndarray]:
        if self._used:
            raise ParameterError("an AudioStream can be iterated only once")
        self._used = True
        for block in self._blocks:
            self.frames += len(block)
            yield block

    def frame_blocks(self) -> Iterator[np.ndarray]:
        """The blocks in ``(n, channels)`` layout (what writers take)."""
        return self._take()

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self._take():
            yield block[:, 0] if self.channels == 1 else block.T

    @property
    def duration_s(self) -> float:
        """Seconds delivered so far (the whole duration once iterated)."""
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class TrackContext:
    """What an analysis may want to know about the track it runs on.

    Attributes
    ----------
    track_id : str
    uri : str
        The source audio.
    source : SourceInfo or None
        The source's header, when the source was probed in this run.
    content_hash : str or None
        ``blake3:<hex>`` of the source bytes (``sha256:<hex>`` in records written before).
    size_bytes : int or None
    """

    track_id: str
    uri: str
    source: SourceInfo | None = None
    content_hash: str | None = None
    size_bytes: int | None = None


@dataclass
class Result:
    """An analysis' return value with metadata to show beside it in Dagster.

    Parameters
    ----------
    value : object
        What the output kind writes.
    metadata : dict
        Flat JSON-serialisable values (numbers, strings) added to the track's metadata.
    """

    value: Any
    metadata: dict[str, Any] = field(default_factory=dict)


def lockstep_streams(
    pairs: Iterator[tuple[np.ndarray, ...]],
    names: tuple[str, ...],
    *,
    sample_rate: int,
    channels: int,
    max_ahead: int = 2,
) -> dict[str, AudioStream]:
    """Streams that share one producer of tuples of blocks (one block per name).

    An analysis that produces several audio outputs at once (``stems``: vocals and
    accompaniment) yields ``(block_a, block_b)`` tuples; each output gets its own
    :class:`AudioStream`. Writers consume the streams concurrently (see
    :class:`~klio_assets.worker.outputs.AudioFiles`); a stream that runs ``max_ahead`` blocks
    ahead of another waits for it, so memory stays a few blocks whatever the duration. An
    error in the producer reaches every stream.

    Parameters
    ----------
    pairs : iterator of tuple of np.ndarray [shape=(n, channels)]
    names : tuple of str
    sample_rate : int
        Hz.
    channels : int
    max_ahead : int
        Blocks one stream may hold for a slower one.
    """
    queues: dict[str, list[np.ndarray]] = {name: [] for name in names}
    done = {name: False for name in names}
    state: dict[str, Any] = {"exhausted": False, "error": None}
    cond = threading.Condition()

    def advance() -> None:  # called with the lock held
        try:
            blocks = next(pairs)
        except StopIteration:
            state["exhausted"] = True
            return
        except BaseException as exc:  # every stream re-raises it
            state["error"] = exc
            return
        if len(blocks) != len(names):
            state["error"] = ParameterError(
                f"expected {len(names)} blocks ({', '.join(names)}) per step, got {len(blocks)}"
            )
            return
        for name, block in zip(names, blocks, strict=True):
            if not done[name]:
                queues[name].append(block)

    def blocks_of(name: str) -> Iterator[np.ndarray]:
        try:
            while True:
                with cond:
                    while not queues[name]:
                        if state["error"] is not None:
                            raise state["error"]
                        if state["exhausted"]:
                            return
                        others = [len(q) for n, q in queues.items() if n != name and not done[n]]
                        if max(others, default=0) >= max_ahead:
                            cond.wait(timeout=1.0)  # a slower writer catches up first
                            continue
                        advance()
                        cond.notify_all()
                    block = queues[name].pop(0)
                    cond.notify_all()
                yield block
        finally:
            with cond:
                done[name] = True
                queues[name].clear()
                cond.notify_all()

    return {
        name: AudioStream(blocks_of(name), sample_rate=sample_rate, channels=channels)
        for name in names
    }
