"""``mel_spectrogram_plot``, ``waveform_plot`` and ``piano_roll_plot``: a PNG per track, shown in the Dagster UI.

Klio's SpecToPlot/WaveformToPlot wrote plots to a bucket nobody looked at; here each track's
materialization embeds its plot (Dagster renders it in the asset's partition view), and the
file stays in storage beside the other outputs. Plots are drawn with matplotlib's
object-oriented API on an Agg canvas (no pyplot state, safe in worker threads) and kept small
(about 640x240 pixels), because an embedded image is stored in Dagster's event log.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from klio_assets.worker.analysis import Audio, TrackContext, Upstream, analysis
from klio_assets.worker.outputs import Image

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn, not with the module
    from matplotlib.figure import Figure


class PlotParams(BaseModel):
    """Parameters of the plots."""

    width_px: int = Field(640, ge=64, le=4096, description="Image width in pixels.")
    height_px: int = Field(240, ge=48, le=4096, description="Image height in pixels.")


_DPI = 80


def _figure(params: PlotParams) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - lazy, heavy
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(params.width_px / _DPI, params.height_px / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    """PNG bytes, quantised to a 128-colour palette: a third of the size, same look."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - lazy, heavy
    from PIL import Image as PILImage  # noqa: PLC0415 - matplotlib's own dependency

    canvas = figure.canvas
    assert isinstance(canvas, FigureCanvasAgg)  # _figure attached an Agg canvas
    canvas.draw()
    rgba = PILImage.frombuffer("RGBA", canvas.get_width_height(), bytes(canvas.buffer_rgba()))
    buffer = io.BytesIO()
    rgba.convert("RGB").quantize(colors=128).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _pool_columns(array: np.ndarray, columns: int) -> np.ndarray:
    """Average groups of frames so that the image has at most ``columns`` columns."""
    import numpy as np  # noqa: PLC0415

    if array.shape[-1] <= columns:
        return array
    starts = np.linspace(0, array.shape[-1], columns, endpoint=False).astype(np.int64)
    counts = np.diff(np.append(starts, array.shape[-1]))
    return np.add.reduceat(array, starts, axis=-1) / counts


def _duration(track: TrackContext, fallback: float) -> float:
    source = track.source
    return source.frames / source.sample_rate if source and source.sample_rate else fallback


@analysis(
    inputs={"mel": Upstream("mel_spectrogram")},
    output=Image(),
    code_version="1",
    params=PlotParams,
)
def mel_spectrogram_plot(mel: np.ndarray, params: PlotParams, track: TrackContext) -> bytes:
    """The mel spectrogram (dB) as an image: time in seconds across, mel band up."""
    import numpy as np  # noqa: PLC0415

    figure = _figure(params)
    axes = figure.add_axes((0.08, 0.18, 0.78, 0.72))
    frames = mel.shape[-1]
    duration = _duration(track, float(frames))
    image = axes.imshow(
        _pool_columns(np.asarray(mel, dtype=np.float32), params.width_px),
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, duration, 0, mel.shape[0]),
        interpolation="nearest",
    )
    axes.set_xlabel("time (s)", fontsize=8)
    axes.set_ylabel("mel band", fontsize=8)
    axes.set_title(f"{track.track_id}: mel spectrogram", fontsize=9)
    axes.tick_params(labelsize=7)
    colorbar = figure.colorbar(image, cax=figure.add_axes((0.88, 0.18, 0.02, 0.72)))
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("dB", fontsize=8)
    return _png(figure)


@analysis(
    inputs={"audio": Upstream("downsampled_audio")},
    output=Image(),
    code_version="1",
    params=PlotParams,
)
def waveform_plot(audio: Audio, params: PlotParams, track: TrackContext) -> bytes:
    """The waveform as an image: the min/max envelope per pixel column, time in seconds."""
    import numpy as np  # noqa: PLC0415

    y = audio.mono()
    if len(y) == 0:
        y = np.zeros(1, np.float32)
    columns = min(params.width_px * 2, len(y))
    starts = np.linspace(0, len(y), columns, endpoint=False).astype(np.int64)  # strictly increasing
    lows, highs = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    times = starts / audio.sample_rate
    figure = _figure(params)
    axes = figure.add_axes((0.08, 0.18, 0.9, 0.72))
    axes.fill_between(times, lows, highs, color="#1f77b4", linewidth=0.5)
    axes.set_xlim(0.0, max(audio.duration_s, 1e-3))
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlabel("time (s)", fontsize=8)
    axes.set_ylabel("amplitude", fontsize=8)
    axes.set_title(f"{track.track_id}: waveform", fontsize=9)
    axes.tick_params(labelsize=7)
    return _png(figure)


@analysis(
    inputs={"events": Upstream("note_events")},
    output=Image(),
    code_version="1",
    params=PlotParams,
)
def piano_roll_plot(events: dict[str, Any], params: PlotParams, track: TrackContext) -> bytes:
    """The transcribed notes as a piano roll: time in seconds across, MIDI pitch up, shade by
    amplitude."""
    from matplotlib.collections import PolyCollection  # noqa: PLC0415 - lazy, heavy

    notes = events["notes"]
    figure = _figure(params)
    axes = figure.add_axes((0.08, 0.18, 0.9, 0.72))
    boxes = [[(s, p - 0.4), (e, p - 0.4), (e, p + 0.4), (s, p + 0.4)] for s, e, p, _ in notes]
    shades = [min(1.0, max(0.15, float(a))) for *_, a in notes]
    axes.add_collection(PolyCollection(boxes, facecolors=[(0.12, 0.47, 0.71, s) for s in shades]))
    end = max((n[1] for n in notes), default=1.0)
    low = min((n[2] for n in notes), default=48)
    high = max((n[2] for n in notes), default=72)
    axes.set_xlim(0.0, max(end, 1e-3))
    axes.set_ylim(low - 2, high + 2)
    axes.set_xlabel("time (s)", fontsize=8)
    axes.set_ylabel("MIDI pitch", fontsize=8)
    axes.set_title(f"{track.track_id}: piano roll ({len(notes)} notes)", fontsize=9)
    axes.tick_params(labelsize=7)
    return _png(figure)
