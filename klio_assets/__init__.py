"""klio-assets: Klio-style large-scale audio processing on Dagster.

Each audio analysis is a partitioned Dagster asset keyed by track ID whose materialization
launches one Apache Beam job per batch of tracks. Write an analysis as one function::

    from klio_assets import Json, SourceAudio, analysis

    @analysis(inputs={"audio": SourceAudio(mono=True)}, output=Json(), code_version="1")
    def rms(audio):
        return {"rms": float((audio.samples ** 2).mean() ** 0.5)}

This module exports the authoring API only and imports nothing from Dagster (workers import
it); the Dagster code location is :mod:`klio_assets.definitions`.
"""

from klio_assets.errors import KlioAssetsError
from klio_assets.worker.analysis import (
    Analysis,
    Audio,
    AudioStream,
    LoadedModel,
    OnnxModel,
    Result,
    SourceAudio,
    TorchModel,
    TrackContext,
    Upstream,
    analysis,
    param,
)
from klio_assets.worker.models import ModelHandler
from klio_assets.worker.outputs import (
    AudioFile,
    AudioFiles,
    Image,
    Json,
    MidiFile,
    NumpyArray,
    TableRow,
)

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "Audio",
    "AudioFile",
    "AudioFiles",
    "AudioStream",
    "Image",
    "Json",
    "KlioAssetsError",
    "LoadedModel",
    "MidiFile",
    "ModelHandler",
    "NumpyArray",
    "OnnxModel",
    "Result",
    "SourceAudio",
    "TableRow",
    "TorchModel",
    "TrackContext",
    "Upstream",
    "analysis",
    "param",
]
