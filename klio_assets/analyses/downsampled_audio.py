"""``downsampled_audio``: the source as mono FLAC at a lower rate (22.05 kHz by default)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from klio_assets.worker.analysis import AudioStream, SourceAudio, analysis, param
from klio_assets.worker.outputs import AudioFile


class DownsampleParams(BaseModel):
    """Parameters of :func:`downsampled_audio`."""

    sample_rate: int = Field(22050, gt=0, le=384_000, description="Target sample rate in Hz.")


@analysis(
    inputs={"audio": SourceAudio(sample_rate=param("sample_rate"), mono=True, stream=True)},
    output=AudioFile(format="FLAC", subtype="PCM_16"),
    code_version="1",
    params=DownsampleParams,
)
def downsampled_audio(audio: AudioStream) -> AudioStream:
    """Mono, resampled with soxr (high quality), 16-bit FLAC, exactly
    ``round(n * target / source)`` frames; decoded and written block by block."""
    return audio
