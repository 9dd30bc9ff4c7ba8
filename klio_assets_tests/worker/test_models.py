"""Models in the authoring API: loaded once per process, versioned by their weights, batched
across threads, placed by the device setting, hinted on Dataflow.

Real onnxruntime sessions of small ONNX models that the tests build with the ``onnx`` helper
API, a real TorchScript model, real Beam pipelines. No GPU exists here: the CUDA path is
checked up to onnxruntime's and torch's device selection and to the Dataflow resource hints.
"""

from __future__ import annotations

import threading

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from klio_assets import Json, SourceAudio, analysis
from klio_assets.errors import ParameterError
from klio_assets.worker import models
from klio_assets.worker.models import ModelError, OnnxModel, TorchModel, onnx_providers
from klio_assets.worker.pipeline import build_pipeline
from klio_assets.worker.plan import Layout, RunPlan, plan_analyses
from klio_assets.worker.storage import Storage
from klio_assets_tests.worker.test_pipeline import run_plan


def write_linear_onnx(path, weights: np.ndarray) -> str:
    """An ONNX model ``y = x @ weights`` (x: (n, rows of weights), float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_in, n_out = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n_out])],
        [numpy_helper.from_array(weights.astype(np.float32), name="w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture
def linear(tmp_path):
    weights = np.arange(8, dtype=np.float32).reshape(4, 2)
    return write_linear_onnx(tmp_path / "linear.onnx", weights), weights


def test_onnx_model_runs_and_its_identity_follows_the_weights(tmp_path, linear):
    path, weights = linear
    model = OnnxModel(path=path, version="v1", batch=4)
    loaded = models.acquire(model, "cpu")
    try:
        x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
        (y,) = loaded.infer(x)
        np.testing.assert_allclose(y, x @ weights, rtol=1e-5)
        assert loaded.batch_calls == 3  # 10 rows in batches of 4
        assert loaded.session().get_providers() == ["CPUExecutionProvider"]
    finally:
        models.release(model, "cpu")
    same = write_linear_onnx(tmp_path / "copy.onnx", weights)
    other = write_linear_onnx(tmp_path / "other.onnx", weights + 1)
    assert models.identity(OnnxModel(path=same, version="v1")) == models.identity(model)
    assert models.identity(OnnxModel(path=other, version="v1")) != models.identity(model)
    assert models.identity(OnnxModel(path=path, version="v2")) != models.identity(model)


def _analysis_with(model):
    @analysis(
        inputs={"audio": SourceAudio(mono=True)}, output=Json(), code_version="3", model=model
    )
    def tagged(audio, model):
        return {}

    return tagged


def test_new_weights_change_the_output_version_and_the_same_weights_never_do(tmp_path):
    weights = np.ones((4, 2), np.float32)
    first = write_linear_onnx(tmp_path / "a.onnx", weights)
    version = plan_analyses([_analysis_with(OnnxModel(path=first, version="x"))])["tagged"].version
    again = write_linear_onnx(tmp_path / "b.onnx", weights)  # same bytes, another file
    assert (
        plan_analyses([_analysis_with(OnnxModel(path=again, version="x"))])["tagged"].version
        == version
    )
    write_linear_onnx(tmp_path / "a.onnx", weights * 2)  # retrained in place
    changed = plan_analyses([_analysis_with(OnnxModel(path=first, version="x"))])["tagged"]
    assert changed.version != version and changed.version.startswith("3-")


def test_a_model_is_loaded_once_per_process_by_concurrent_threads(linear):
    path, _ = linear
    model = OnnxModel(path=path, version="v1")
    before = models.load_count()
    got = []
    barrier = threading.Barrier(8)

    def take():
        barrier.wait()
        got.append(models.acquire(model, "cpu"))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert models.load_count() - before == 1
    assert len({id(m) for m in got}) == 1
    for _ in got:
        models.release(model, "cpu")
    assert models.loaded_models() == 0  # released with the last lease


def test_batches_gather_rows_from_concurrent_tracks():
    sizes = []
    gate = threading.Event()

    class Slow:
        version, batch = "slow", 8

        def weights_path(self):
            return __file__

        def load(self, device):
            def run(rows):
                gate.wait(5)
                sizes.append(len(rows))
                return [rows * 2]

            return run

    handler = Slow()
    loaded = models.acquire(handler, "cpu")
    results = {}

    def track(i):
        results[i] = loaded.infer(np.full((3, 1), i, np.float32))[0]

    threads = [threading.Thread(target=track, args=(i,)) for i in range(4)]
    threads[0].start()
    while not loaded._batcher._running:  # the first track runs alone...
        threading.Event().wait(0.01)
    for t in threads[1:]:
        t.start()
    threading.Event().wait(0.2)  # ...while the others queue up behind it
    gate.set()
    for t in threads:
        t.join()
    models.release(handler, "cpu")
    assert sizes[0] == 3 and sizes[1] == 8  # rows of three tracks in one batch
    assert sum(sizes) == 12
    for i in range(4):
        np.testing.assert_array_equal(results[i], np.full((3, 1), 2 * i, np.float32))


def test_a_failed_batch_fails_every_caller_in_it():
    class Broken:
        version, batch = "broken", 4

        def weights_path(self):
            return __file__

        def load(self, device):
            def run(rows):
                raise RuntimeError("kernel exploded")

            return run

    loaded = models.acquire(Broken(), "cpu")
    with pytest.raises(RuntimeError, match="kernel exploded"):
        loaded.infer(np.zeros((2, 1), np.float32))
    models.release(Broken(), "cpu")


def test_device_setting_picks_onnxruntime_providers():
    cpu_only = ["CPUExecutionProvider"]
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cpu", with_cuda) == cpu_only
    assert onnx_providers("auto", cpu_only) == cpu_only
    assert onnx_providers("auto", with_cuda) == with_cuda
    assert onnx_providers("cuda", with_cuda) == with_cuda
    with pytest.raises(ModelError, match="onnxruntime-gpu"):
        onnx_providers("cuda", cpu_only)
    with pytest.raises(ParameterError):
        onnx_providers("tpu", cpu_only)


def test_cuda_demanded_without_a_gpu_fails_each_track_naming_the_fix(tmp_path, linear):
    """The real onnxruntime here has no CUDA provider: asking for it fails the model's tracks
    with the fix in the reason, and the run goes on."""
    import onnxruntime

    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    path, _ = linear
    with pytest.raises(ModelError, match="KLIO_ASSETS_MODEL_DEVICE"):
        OnnxModel(path=path, version="v1").session("cuda")
    assert models.torch_device("auto", cuda_available=False) == "cpu"
    assert models.torch_device("auto", cuda_available=True) == "cuda"
    with pytest.raises(ModelError, match="CUDA build of torch"):
        models.torch_device("cuda", cuda_available=False)


def test_torchscript_model_runs_batched(tmp_path):
    import torch

    module = torch.nn.Linear(4, 3)
    path = str(tmp_path / "linear.pt")
    torch.jit.save(torch.jit.script(module), path)
    handler = TorchModel(path=path, version="t1", batch=5)
    loaded = models.acquire(handler, "auto")
    try:
        x = np.random.default_rng(1).standard_normal((12, 4)).astype(np.float32)
        (y,) = loaded.infer(x)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
        assert loaded.batch_calls == 3
    finally:
        models.release(handler, "auto")
    assert models.identity(handler).startswith("t1/sha256:")


def test_package_weights_are_found_inside_the_package_only():
    path = models.resolve_weights("silero_vad:data/silero_vad.onnx")
    assert path.endswith("silero_vad.onnx")
    with pytest.raises(ModelError, match="outside"):
        models.resolve_weights("silero_vad:../../etc/passwd")
    with pytest.raises(ModelError, match="not installed"):
        models.resolve_weights("no_such_package_xyz:m.onnx")


def _hinted(linear_path, accelerator):
    @analysis(
        inputs={"audio": SourceAudio(mono=True)},
        output=Json(),
        code_version="1",
        model=OnnxModel(path=linear_path, version="h", accelerator=accelerator, min_ram="6GB"),
    )
    def hinted(audio, model):
        return {}

    return hinted


def _analyze_hints(plan, options):
    pipeline = beam.Pipeline(options=PipelineOptions(options))
    build_pipeline(pipeline, plan, [])
    proto = pipeline.to_runner_api()
    (transform,) = [
        t for t in proto.components.transforms.values() if t.unique_name == "AnalyzeTracks"
    ]
    return dict(proto.components.environments[transform.environment_id].resource_hints)


def test_dataflow_gets_the_models_accelerator_when_cuda_is_asked_for(tmp_path, linear):
    accelerator = "type:nvidia-l4;count:1;install-nvidia-driver"
    planned = plan_analyses([_hinted(linear[0], accelerator)])
    assert planned["hinted"].accelerator == accelerator
    plan = RunPlan(run_id="h", storage_root=str(tmp_path), analyses=planned, selected=["hinted"])
    cuda = _analyze_hints(plan, ["--model_device=cuda"])
    assert cuda["beam:resources:accelerator:v1"] == accelerator.encode()
    assert cuda["beam:resources:min_ram_bytes:v1"] == b"6000000000"
    auto = _analyze_hints(plan, [])  # auto never provisions a GPU; RAM still asked for
    assert "beam:resources:accelerator:v1" not in auto
    assert auto["beam:resources:min_ram_bytes:v1"] == b"6000000000"


def test_model_loads_per_beam_job_equal_worker_processes_not_tracks(tmp_path, catalog_tracks):
    """Five distinct tracks through a two-process job: the counter (summed over the workers)
    says each process loaded the model once at most."""
    from klio_assets.analyses import speech_segments

    tracks = [catalog_tracks[t] for t in ("wav44", "flac48", "ogg32", "mp3", "wav8k")]
    planned = plan_analyses([speech_segments])
    plan = RunPlan(
        run_id="loads",
        storage_root=str(tmp_path / "out"),
        analyses=planned,
        selected=["speech_segments"],
        lanes=2,
        force=True,
    )
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    )
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, plan, [{"track_id": t.track_id, "uri": t.path} for t in tracks])
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("model_loads"))
    loads = sum(c.committed for c in counters["counters"])
    assert 1 <= loads <= 2, loads
    storage = Storage(str(tmp_path / "out"))
    results = storage.list_names(Layout(storage).results_folder("loads"))
    assert len(results) == 5


def test_an_analysis_declaring_a_model_must_take_it(linear):
    with pytest.raises(ParameterError, match="'model' parameter"):

        @analysis(
            inputs={"audio": SourceAudio()},
            output=Json(),
            code_version="1",
            model=OnnxModel(path=linear[0], version="v"),
        )
        def forgot(audio):
            return {}

    with pytest.raises(ParameterError, match="not a model declaration"):

        @analysis(inputs={"audio": SourceAudio()}, output=Json(), code_version="1", model="m.onnx")
        def wrong(audio, model):
            return {}


def test_engine_runs_a_model_analysis_and_releases_it(tmp_path, catalog_tracks, linear):
    """Through the real local runner: the function gets the loaded model; the process holds
    no model once the job's DoFns are torn down."""
    from klio_assets.analyses import source_audio

    results, _, storage = run_plan(
        tmp_path,
        [catalog_tracks["wav44"]],
        ["source_audio", "speech_segments"],
        analyses=[source_audio, _speech()],
    )
    record = results["wav44"]["analyses"]["speech_segments"]
    assert record["status"] == "computed", record
    assert storage.read_json(record["uri"])["speech_ratio"] == 0.0  # a synthetic tone
    assert models.loaded_models() == 0


def _speech():
    from klio_assets.analyses import speech_segments

    return speech_segments


def test_cuda_asked_through_the_beam_option_fails_only_the_model_tracks(tmp_path, catalog_tracks):
    """``--model_device=cuda`` (what KLIO_ASSETS_MODEL_DEVICE=cuda passes) on a machine without
    a GPU: each track's model analysis fails naming the fix; the others in the job compute."""
    from klio_assets.analyses import key, source_audio, speech_segments

    planned = plan_analyses([source_audio, key, speech_segments])
    plan = RunPlan(
        run_id="cuda",
        storage_root=str(tmp_path / "out"),
        analyses=planned,
        selected=["key", "speech_segments"],
    )
    options = PipelineOptions(["--runner=FnApiRunner", "--model_device=cuda"])
    tracks = [catalog_tracks[t] for t in ("wav44", "flac48")]
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, plan, [{"track_id": t.track_id, "uri": t.path} for t in tracks])
    storage = Storage(str(tmp_path / "out"))
    folder = Layout(storage).results_folder("cuda")
    names = storage.list_names(folder)
    assert len(names) == 2
    for name in names:
        analyses = storage.read_json(f"{folder}/{name}")["analyses"]
        assert analyses["key"]["status"] == "computed"
        failed = analyses["speech_segments"]
        assert failed["status"] == "failed"
        assert "KLIO_ASSETS_MODEL_DEVICE" in failed["reason"] and "track '" in failed["reason"]


def test_midi_output_refuses_what_is_not_a_midi_file(tmp_path):
    from klio_assets.worker.outputs import MidiFile

    with pytest.raises(ParameterError, match="MThd"):
        MidiFile().write(b"RIFF....", str(tmp_path / "x.mid"))
    with pytest.raises(ParameterError, match="MIDI bytes"):
        MidiFile().write(42, str(tmp_path / "x.mid"))
    header = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0"
    assert MidiFile().write(header, str(tmp_path / "y.mid")) == {"size_bytes": 14}


def test_missing_weights_are_planned_and_fail_per_track_naming_the_install(tmp_path):
    """A deployment without the weight packages still loads its analyses; running one fails
    with what to install."""
    handler = OnnxModel(path="klio_no_such_weights_pkg:m.onnx", version="w1")
    planned = plan_analyses([_analysis_with(handler)])
    assert planned["tagged"].version.startswith("3-")
    assert models.identity(handler) == "w1/weights-missing"
    with pytest.raises(ModelError, match=r"not installed \(install klio-assets\[models\]"):
        models.acquire(handler, "cpu")
    assert models.loaded_models() == 0
