"""The analyses shipped with klio-assets, and loading of a deployment's own (no Dagster here)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from klio_assets.analyses.beats import beats
from klio_assets.analyses.downsampled_audio import downsampled_audio
from klio_assets.analyses.fingerprint import fingerprint
from klio_assets.analyses.loudness import loudness
from klio_assets.analyses.plots import mel_spectrogram_plot, waveform_plot
from klio_assets.analyses.source_audio import source_audio
from klio_assets.analyses.spectrograms import mel_spectrogram, mfcc, spectrogram
from klio_assets.analyses.stems import stems
from klio_assets.errors import ParameterError
from klio_assets.worker.analysis import Analysis

#: The asset standing for each track's source audio (probed and verified); every analysis
#: that decodes the source shows it as upstream in the lineage graph.
SOURCE_ASSET = "source_audio"

#: Built-in analyses, in the order they are listed in the UI.
BUILTIN_ANALYSES: tuple[Analysis, ...] = (
    source_audio,
    downsampled_audio,
    loudness,
    beats,
    spectrogram,
    mel_spectrogram,
    mfcc,
    mel_spectrogram_plot,
    waveform_plot,
    stems,
    fingerprint,
)


def load_analyses(modules: Sequence[str] = ()) -> list[Analysis]:
    """The built-in analyses plus every :class:`Analysis` defined at the top of ``modules``.

    Parameters
    ----------
    modules : sequence of str
        Importable module names (``KLIO_ASSETS_ANALYSES``); they must be importable on the
        Beam workers too.
    """
    found = list(BUILTIN_ANALYSES)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ParameterError(f"cannot import analysis module {name!r}: {exc}") from exc
        extra = [v for v in vars(module).values() if isinstance(v, Analysis) and v.module == name]
        if not extra:
            raise ParameterError(f"module {name!r} defines no analysis (use @klio_assets.analysis)")
        found.extend(a for a in extra if a not in found)
    return found


__all__ = [
    "BUILTIN_ANALYSES",
    "SOURCE_ASSET",
    "beats",
    "downsampled_audio",
    "fingerprint",
    "load_analyses",
    "loudness",
    "mel_spectrogram",
    "mel_spectrogram_plot",
    "mfcc",
    "source_audio",
    "spectrogram",
    "stems",
    "waveform_plot",
]
