"""The analyses shipped with klio-assets, and loading of a deployment's own (no Dagster here).

Each built-in analysis is imported when it is first named (``from klio_assets.analyses import
loudness``, :data:`BUILTIN_ANALYSES`, :func:`load_analyses`), so a Beam worker, which imports
``klio_assets.analyses.<module>`` for each analysis its plan names, loads only those.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from klio_assets.errors import ParameterError
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.plan import SOURCE_ASSET

if TYPE_CHECKING:
    from klio_assets.analyses.beats import beats
    from klio_assets.analyses.downsampled_audio import downsampled_audio
    from klio_assets.analyses.fingerprint import fingerprint
    from klio_assets.analyses.key import key
    from klio_assets.analyses.loudness import loudness
    from klio_assets.analyses.note_events import note_events, note_midi
    from klio_assets.analyses.plots import mel_spectrogram_plot, piano_roll_plot, waveform_plot
    from klio_assets.analyses.source_audio import source_audio
    from klio_assets.analyses.spectrograms import mel_spectrogram, mfcc, spectrogram
    from klio_assets.analyses.speech_segments import speech_segments
    from klio_assets.analyses.stems import stems

    BUILTIN_ANALYSES: tuple[Analysis, ...]

#: Built-in analysis name to the module defining it, in the order they are listed in the UI.
_BUILTIN_MODULES = {
    "source_audio": "source_audio",
    "downsampled_audio": "downsampled_audio",
    "loudness": "loudness",
    "beats": "beats",
    "spectrogram": "spectrograms",
    "mel_spectrogram": "spectrograms",
    "mfcc": "spectrograms",
    "mel_spectrogram_plot": "plots",
    "waveform_plot": "plots",
    "stems": "stems",
    "fingerprint": "fingerprint",
    "key": "key",
    "speech_segments": "speech_segments",
    "note_events": "note_events",
    "note_midi": "note_events",
    "piano_roll_plot": "plots",
}


def _builtin(name: str) -> Analysis:
    module = importlib.import_module(f"{__name__}.{_BUILTIN_MODULES[name]}")
    found = getattr(module, name)
    assert isinstance(found, Analysis)
    return found


def __getattr__(name: str) -> Any:
    """Built-in analyses and :data:`BUILTIN_ANALYSES`, imported on first use (PEP 562)."""
    if name in _BUILTIN_MODULES:
        return _builtin(name)
    if name == "BUILTIN_ANALYSES":
        value = tuple(_builtin(n) for n in _BUILTIN_MODULES)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """This package, keeping each built-in analysis under its name.

    Importing ``klio_assets.analyses.loudness`` sets the package's attribute ``loudness`` to
    the *module*; the analysis of the same name is what ``from klio_assets.analyses import
    loudness`` has always given, so the attribute is set to it instead.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, types.ModuleType)
            and _BUILTIN_MODULES.get(name) == name
            and value.__name__ == f"{__name__}.{name}"
            and isinstance(getattr(value, name, None), Analysis)
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def load_analyses(modules: Sequence[str] = ()) -> list[Analysis]:
    """The built-in analyses plus every :class:`Analysis` defined at the top of ``modules``.

    Parameters
    ----------
    modules : sequence of str
        Importable module names (``KLIO_ASSETS_ANALYSES``); they must be importable on the
        Beam workers too.
    """
    found = [_builtin(n) for n in _BUILTIN_MODULES]
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
    "key",
    "load_analyses",
    "loudness",
    "mel_spectrogram",
    "mel_spectrogram_plot",
    "mfcc",
    "note_events",
    "note_midi",
    "piano_roll_plot",
    "source_audio",
    "spectrogram",
    "speech_segments",
    "stems",
    "waveform_plot",
]
