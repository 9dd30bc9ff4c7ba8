"""``source_audio``: what the source file really holds, verified by decoding it once."""

from __future__ import annotations

import math
from typing import Any

from klio_assets.worker.analysis import AudioStream, SourceAudio, TrackContext, analysis
from klio_assets.worker.outputs import Json


@analysis(inputs={"audio": SourceAudio(stream=True)}, output=Json(), code_version="1")
def source_audio(audio: AudioStream, track: TrackContext) -> dict[str, Any]:
    """Probe of the source: container, codec, sample rate, channels, exact frames and
    duration (counted by a full decode, so truncation is caught), sample peak, and the
    BLAKE3 hash of its bytes (``blake3:<hex>``, which content deduplication uses;
    outputs written before carry ``sha256:<hex>``)."""
    peak = 0.0
    for block in audio:
        if block.size:
            peak = max(peak, float(block.max()), -float(block.min()))
    assert track.source is not None
    return {
        "container": track.source.container,
        "codec": track.source.codec,
        "decoder": track.source.decoder,
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "frames": audio.frames,
        "duration_s": audio.duration_s,
        "peak_dbfs": round(20 * math.log10(peak), 3) if peak > 0 else None,
        "content_hash": track.content_hash,
        "size_bytes": track.size_bytes,
    }
