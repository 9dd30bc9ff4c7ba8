"""klio-assets: Klio-style large-scale audio processing on Dagster.

Each audio analysis is a partitioned Dagster asset keyed by track ID whose materialization
launches one Apache Beam job per batch of tracks. Write an analysis as one function::

    from klio_assets import Json, SourceAudio, analysis

    @analysis(inputs={"audio": SourceAudio(mono=True)}, output=Json(), code_version="1")
    def rms(audio):
        return {"rms": float((audio.samples ** 2).mean() ** 0.5)}

This module exports the authoring API only and imports nothing from Dagster (workers import
it); the Dagster code location is :mod:`klio_assets.definitions`. The names are imported on
first use (PEP 562): importing any ``klio_assets`` submodule runs this package's ``__init__``,
and the CLI's commands that do not touch analyses need neither numpy nor soundfile.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from klio_assets.errors import KlioAssetsError

if TYPE_CHECKING:
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

#: Exported name to the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        (
            "Analysis",
            "Audio",
            "AudioStream",
            "LoadedModel",
            "OnnxModel",
            "Result",
            "SourceAudio",
            "TorchModel",
            "TrackContext",
            "Upstream",
            "analysis",
            "param",
        ),
        "klio_assets.worker.analysis",
    ),
    "ModelHandler": "klio_assets.worker.models",
    **dict.fromkeys(
        ("AudioFile", "AudioFiles", "Image", "Json", "MidiFile", "NumpyArray", "TableRow"),
        "klio_assets.worker.outputs",
    ),
}


def __getattr__(name: str) -> Any:
    """The authoring API's names, imported on first use (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
