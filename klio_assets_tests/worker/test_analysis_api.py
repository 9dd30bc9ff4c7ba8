"""The authoring API: one function plus declarations; versions and parameters."""

import numpy as np
import pytest
from pydantic import BaseModel

from klio_assets import AudioFile, Json, SourceAudio, Upstream, analysis, param
from klio_assets.analyses import downsampled_audio, load_analyses, source_audio
from klio_assets.errors import ParameterError
from klio_assets.worker.plan import plan_analyses, sort_topologically


def test_downsampled_audio_is_a_few_lines():
    import inspect

    source = inspect.getsource(inspect.getmodule(downsampled_audio.fn))
    body = [
        line
        for line in source.splitlines()
        if line.strip() and not line.strip().startswith(("#", '"""'))
    ]
    assert len(body) <= 25
    assert downsampled_audio.reads_source and downsampled_audio.output.extension == "flac"


def test_inputs_must_be_parameters_of_the_function():
    with pytest.raises(ParameterError, match=r"inputs \['y'\] are not parameters of f\(\)"):

        @analysis(inputs={"y": SourceAudio()}, output=Json(), code_version="1")
        def f(audio):
            return {}


@pytest.mark.parametrize("name", ["Bad", "has-dash", "1st", ""])
def test_analysis_names_are_checked(name):
    with pytest.raises(ParameterError, match="must be lowercase"):
        analysis(inputs={}, output=Json(), code_version="1", name=name)(lambda: {})


def test_version_changes_with_parameters_and_with_upstream_versions():
    base = plan_analyses(load_analyses())
    other_rate = plan_analyses(load_analyses(), {"downsampled_audio": {"sample_rate": 16000}})
    assert base["source_audio"].version == "1"
    assert base["downsampled_audio"].version.startswith("1-")
    assert other_rate["downsampled_audio"].version != base["downsampled_audio"].version

    from klio_assets_tests.support import sample_analyses

    chain = [source_audio, downsampled_audio, sample_analyses.peak_frequency]
    a = plan_analyses(chain)
    b = plan_analyses(chain, {"downsampled_audio": {"sample_rate": 16000}})
    assert a["peak_frequency"].version != b["peak_frequency"].version


def test_invalid_parameter_override_is_refused_with_the_analysis_named():
    with pytest.raises(ParameterError, match="analysis 'downsampled_audio': invalid parameters"):
        plan_analyses(load_analyses(), {"downsampled_audio": {"sample_rate": -5}})
    with pytest.raises(ParameterError, match="unknown analyses"):
        plan_analyses(load_analyses(), {"nope": {}})


def test_param_reference_resolves_to_the_configured_value():
    class P(BaseModel):
        rate: int = 8000

    @analysis(
        inputs={"a": SourceAudio(sample_rate=param("rate"), mono=True)},
        output=Json(),
        code_version="1",
        params=P,
    )
    def g(a):
        return {}

    resolved = g.resolve_input(g.inputs["a"], g.params({"rate": 12000}))
    assert resolved.sample_rate == 12000


def test_topological_order_and_unknown_upstream():
    @analysis(inputs={"x": Upstream("missing")}, output=Json(), code_version="1")
    def needs_missing(x):
        return {}

    with pytest.raises(ParameterError, match="reads unknown analysis 'missing'"):
        sort_topologically({"needs_missing": needs_missing})
    from klio_assets_tests.support import sample_analyses

    order = sort_topologically(
        {a.name: a for a in (sample_analyses.peak_frequency, downsampled_audio, source_audio)}
    )
    assert order.index("downsampled_audio") < order.index("peak_frequency")


def test_outputs_refuse_pickle_needing_values(tmp_path):
    from klio_assets.worker.outputs import NumpyArray

    with pytest.raises(ParameterError, match="dtype=object"):
        NumpyArray().write(np.array([{"a": 1}], dtype=object), str(tmp_path / "x.npy"))
    with pytest.raises(ParameterError, match="NaN or infinity"):
        Json().write({"x": float("nan")}, str(tmp_path / "x.json"))


def test_audio_output_checks_format_and_subtype():
    with pytest.raises(ParameterError, match="not valid for FLAC"):
        AudioFile(format="FLAC", subtype="FLOAT")
