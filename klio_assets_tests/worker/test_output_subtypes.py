"""``AudioFile``/``AudioFiles`` know libsndfile's formats without importing soundfile (so that
defining an analysis, and listing them for ``klio-assets run``'s all-done answer, imports
neither soundfile nor numpy): their table must be libsndfile's own answer."""

import pytest
import soundfile as sf

from klio_assets.errors import ParameterError
from klio_assets.worker.outputs import AUDIO_SUBTYPES, AudioFile


def test_the_audio_subtypes_table_is_what_libsndfile_writes():
    for fmt, subtypes in AUDIO_SUBTYPES.items():
        assert subtypes == {s for s in sf.available_subtypes(fmt) if sf.check_format(fmt, s)}


def test_an_audio_output_refuses_a_subtype_its_format_cannot_hold():
    assert AudioFile("WAV", "FLOAT").subtype == "FLOAT"
    with pytest.raises(ParameterError, match="'VORBIS' is not valid for WAV"):
        AudioFile("WAV", "VORBIS")
