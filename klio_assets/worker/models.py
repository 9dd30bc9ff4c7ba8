"""Models in the authoring API: declared once, loaded once per worker process, batched.

An analysis that needs a neural network declares it; the framework does the rest::

    @analysis(
        inputs={"audio": SourceAudio(sample_rate=16000, mono=True)},
        output=Json(),
        code_version="1",
        model=OnnxModel(path="my_pkg:weights/tagger.onnx", version="2024-06", batch=16),
    )
    def tags(audio, model):
        windows = frame(audio.samples, 16000)           # (n, 16000), fixed length
        (logits,) = model.infer(windows)                 # batched, shared, thread-safe
        return {"tags": logits.mean(axis=0).tolist()}

What the framework does with the declaration:

* **Loading**: :func:`acquire` loads a model the first time a worker process needs it and
  keeps it in a process-level cache keyed by its identity, shared by every thread and every
  :class:`~klio_assets.worker.execution.Engine` of the process; an engine releases its lease
  when its DoFn is torn down and the model is dropped when no lease is left. Each load is
  counted (:func:`load_count`), so "loads per Beam job == worker processes" is measured.
* **Version**: :meth:`OnnxModel.identity` (the declared version plus the sha256 of the weights
  file) is part of the analysis' output version: new weights recompute, the same weights never
  do.
* **Batching**: :meth:`LoadedModel.infer` gathers fixed-length windows, from one track and from
  every track the process works on at the same time, into batches of ``batch`` rows (as Beam's
  RunInference does), so the model sees full batches where there is enough work.
* **Device**: ``cpu``, ``cuda`` or ``auto`` (the ``KLIO_ASSETS_MODEL_DEVICE`` setting, carried
  to the workers in the run plan) picks onnxruntime's execution providers; ``cuda`` demanded
  where onnxruntime has no CUDA provider is an error naming the fix. On Dataflow the
  declaration's ``accelerator`` and ``min_ram`` become resource hints of the analysis step.

PyTorch models saved as TorchScript run through :class:`TorchModel` (the ``torch`` extra).
Other runtimes plug in through :class:`ModelHandler`: a frozen dataclass with ``version``,
``batch``, :meth:`~ModelHandler.weights_path` and :meth:`~ModelHandler.load`.
This module imports nothing from Dagster; onnxruntime is imported when a model is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from klio_assets.errors import KlioAssetsError, ParameterError

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


__all__ = [
    "DEVICES",
    "LoadedModel",
    "ModelError",
    "ModelHandler",
    "OnnxModel",
    "TorchModel",
    "acquire",
    "load_count",
    "loaded_models",
    "onnx_providers",
    "release",
    "torch_device",
    "unreported_loads",
]

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class ModelError(KlioAssetsError):
    """A model cannot be found, loaded or run on the device asked for."""


@runtime_checkable
class ModelHandler(Protocol):
    """What the framework needs of a model declaration (see :class:`OnnxModel`).

    Attributes
    ----------
    version : str
        The author's name for these weights; part of the output version.
    batch : int
        Rows per inference call.
    """

    @property
    def version(self) -> str:
        """The author's name for these weights."""
        ...

    @property
    def batch(self) -> int:
        """Rows per inference call."""
        ...

    def weights_path(self) -> str:
        """The local file holding the weights (hashed into the identity)."""
        ...

    def load(self, device: str) -> Callable[[np.ndarray], list[np.ndarray]]:
        """Load the model for ``device``; return a function from a batch to its outputs."""
        ...


_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _sha256(path: str) -> str:
    """sha256 of a weights file, cached by path, size and modification time."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    with _HASH_LOCK:
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def identity(model: ModelHandler) -> str:
    """``<version>/sha256:<first 16 hex digits>`` of a model declaration.

    Weights that are not installed (a deployment that leaves the ``models`` extra out) give
    ``<version>/weights-missing``: the analysis is still planned and listed, and each track
    it is run on fails naming what to install, while every other analysis runs.
    """
    try:
        path = model.weights_path()
    except ModelError:
        return f"{model.version}/weights-missing"
    try:
        return f"{model.version}/sha256:{_sha256(path)[:16]}"
    except OSError as exc:
        raise ModelError(f"model {model.version!r}: cannot read its weights: {exc}") from exc


def resolve_weights(spec: str) -> str:
    """A weights location as a local path.

    Parameters
    ----------
    spec : str
        A file path, or ``"package:relative/path"`` for a file shipped inside an installed
        package (found without importing the package: its own dependencies may be absent).
    """
    if ":" in spec and not os.path.isabs(spec) and not spec.startswith(("./", "../")):
        package, _, resource = spec.partition(":")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ModelError(
                f"model weights {spec!r}: package {package!r} is not installed "
                "(install klio-assets[models], or scripts/setup.sh)"
            )
        base = os.path.realpath(next(iter(found.submodule_search_locations)))
        path = os.path.realpath(os.path.join(base, resource))
        if os.path.commonpath([base, path]) != base:
            raise ModelError(f"model weights {spec!r} point outside package {package!r}")
    else:
        path = spec
    if not os.path.isfile(path):
        raise ModelError(f"model weights {spec!r}: no such file {path!r}")
    return path


def _onnxruntime() -> Any:
    """onnxruntime, or an error naming the extra that installs it."""
    try:
        import onnxruntime  # noqa: PLC0415 - the models extra, loaded with a model only
    except ImportError as exc:
        raise ModelError(
            "onnxruntime is not installed: install klio-assets[models] (or run scripts/setup.sh)"
        ) from exc
    return onnxruntime


def onnx_providers(device: str, available: Sequence[str] | None = None) -> list[str]:
    """onnxruntime execution providers for ``device``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``auto`` takes CUDA where onnxruntime offers it, else the CPU.
    available : sequence of str, optional
        onnxruntime's available providers (asked of onnxruntime if omitted).

    Raises
    ------
    ModelError
        ``cuda`` asked for and onnxruntime has no CUDA provider.
    """
    if device not in DEVICES:
        raise ParameterError(f"model device {device!r} is not one of {', '.join(DEVICES)}")
    if available is None:
        available = _onnxruntime().get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ModelError(
            "model device 'cuda' asked for (KLIO_ASSETS_MODEL_DEVICE), but onnxruntime offers "
            f"only {list(available)}: install onnxruntime-gpu with CUDA on a machine with a "
            "GPU, or set KLIO_ASSETS_MODEL_DEVICE=auto or cpu"
        )
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX model run with onnxruntime.

    Parameters
    ----------
    path : str
        The ``.onnx`` file, or ``"package:relative/path.onnx"`` inside an installed package.
    version : str
        The author's name for these weights (the sha256 of the file is added to it).
    batch : int
        Rows per inference call (windows from one track and across tracks).
    input_name : str, optional
        The input that :meth:`LoadedModel.infer` feeds (default: the model's first).
    output_names : tuple of str
        Outputs returned, in this order (default: all, in the model's order).
    threads : int
        onnxruntime intra-op threads per session: workers already run one track per core.
    accelerator : str, optional
        Dataflow accelerator hint of the analysis step when a GPU is asked for, e.g.
        ``"type:nvidia-l4;count:1;install-nvidia-driver"``.
    min_ram : str, optional
        Dataflow minimum RAM hint, e.g. ``"8GB"``.
    """

    path: str
    version: str
    batch: int = 1
    input_name: str | None = None
    output_names: tuple[str, ...] = ()
    threads: int = 1
    accelerator: str | None = None
    min_ram: str | None = None
    _session_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.version or "/" in self.version:
            raise ParameterError(f"model version {self.version!r} is not valid")
        if self.batch < 1:
            raise ParameterError(f"model batch={self.batch} must be positive")
        if self.threads < 1:
            raise ParameterError(f"model threads={self.threads} must be positive")

    def weights_path(self) -> str:
        """The local ``.onnx`` file."""
        return resolve_weights(self.path)

    def load(self, device: str) -> Callable[[np.ndarray], list[np.ndarray]]:
        """An onnxruntime session for ``device``, as a batch -> outputs function."""
        return _OnnxRunner(self.session(device), self.input_name, self.output_names)

    def session(self, device: str) -> Any:
        """A new onnxruntime ``InferenceSession`` of this model on ``device``."""
        onnxruntime = _onnxruntime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        path = self.weights_path()
        try:
            return onnxruntime.InferenceSession(
                path, sess_options=options, providers=onnx_providers(device)
            )
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"model {self.version!r}: cannot load {path}: {exc}") from exc


class _OnnxRunner:
    """One onnxruntime session fed through one input (sessions are thread-safe)."""

    def __init__(self, session: Any, input_name: str | None, output_names: tuple[str, ...]):
        self.session = session
        self.input_name = input_name or session.get_inputs()[0].name
        self.output_names = list(output_names) or None

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(self.output_names, {self.input_name: batch}))


def torch_device(device: str, *, cuda_available: bool | None = None) -> str:
    """The torch device for ``device``: ``cuda`` where asked (an error without CUDA) or where
    ``auto`` finds it, else ``cpu``."""
    if device not in DEVICES:
        raise ParameterError(f"model device {device!r} is not one of {', '.join(DEVICES)}")
    if cuda_available is None:
        import torch  # noqa: PLC0415 - the torch extra

        cuda_available = bool(torch.cuda.is_available())
    if device == "cuda" and not cuda_available:
        raise ModelError(
            "model device 'cuda' asked for (KLIO_ASSETS_MODEL_DEVICE), but torch sees no CUDA "
            "device: install a CUDA build of torch on a machine with a GPU, or set "
            "KLIO_ASSETS_MODEL_DEVICE=auto or cpu"
        )
    return "cuda" if device in ("cuda", "auto") and cuda_available else "cpu"


@dataclass(frozen=True)
class TorchModel:
    """A PyTorch model saved as TorchScript (``torch.jit.save``), run under
    ``torch.inference_mode`` (the ``torch`` extra).

    Parameters
    ----------
    path : str
        The TorchScript file, or ``"package:relative/path.pt"``.
    version : str
    batch : int
    threads : int
        torch intra-op threads in the worker process (one track per core already).
    accelerator, min_ram : str, optional
        Dataflow resource hints, as for :class:`OnnxModel`.

    The model takes one float32 tensor (rows on axis 0) and returns a tensor or a tuple of
    tensors; :meth:`LoadedModel.infer` gives numpy arrays back.
    """

    path: str
    version: str
    batch: int = 1
    threads: int = 1
    accelerator: str | None = None
    min_ram: str | None = None

    def __post_init__(self) -> None:
        if not self.version or "/" in self.version:
            raise ParameterError(f"model version {self.version!r} is not valid")
        if self.batch < 1:
            raise ParameterError(f"model batch={self.batch} must be positive")

    def weights_path(self) -> str:
        """The local TorchScript file."""
        return resolve_weights(self.path)

    def load(self, device: str) -> Callable[[np.ndarray], list[np.ndarray]]:
        """The TorchScript module on ``device``, as a batch -> outputs function."""
        import numpy as np  # noqa: PLC0415

        try:
            import torch  # noqa: PLC0415 - the torch extra
        except ImportError as exc:
            raise ModelError(
                f"model {self.version!r} needs PyTorch: install klio-assets[torch]"
            ) from exc
        target = torch_device(device)
        torch.set_num_threads(self.threads)
        path = self.weights_path()
        try:
            module = torch.jit.load(path, map_location=target).eval()  # type: ignore[no-untyped-call]
        except Exception as exc:  # torch raises RuntimeError and others for a bad file
            raise ModelError(f"model {self.version!r}: cannot load {path}: {exc}") from exc

        def run(batch: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                out = module(torch.from_numpy(np.ascontiguousarray(batch)).to(target))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return [o.detach().cpu().numpy() for o in outs]

        return run


class _Batcher:
    """Gathers rows from every thread of the process into batches of ``size``.

    A caller submits its rows and, while its own rows are not done, either waits or, when no
    other thread is running the model, runs the next batch itself (rows of any caller, in
    arrival order). So concurrent tracks fill each other's batches, and a lone track is never
    kept waiting for rows that will not come.
    """

    def __init__(self, run: Callable[[np.ndarray], list[np.ndarray]], size: int):
        self._run = run
        self.size = size
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._running = False
        self.calls = 0
        self.rows = 0

    def infer(self, rows: np.ndarray) -> list[np.ndarray]:
        import numpy as np  # noqa: PLC0415

        request = _Request(np.ascontiguousarray(rows))
        if len(request.rows) == 0:
            raise ParameterError("model.infer() was given no rows")
        with self._cond:
            self._pending.append(request)
            while not request.done:
                if self._running:
                    self._cond.wait()
                    continue
                pieces = self._take()
                self._running = True
                self._cond.release()
                try:
                    error: BaseException | None = None
                    try:
                        outputs = self._run(np.concatenate([p[1] for p in pieces]))
                    except BaseException as exc:  # handed to each caller whose rows were in it
                        error = exc
                finally:
                    self._cond.acquire()
                    self._running = False
                self.calls += 1
                self.rows += sum(len(p[1]) for p in pieces)
                start = 0
                for owner, part in pieces:
                    if error is not None:
                        owner.fail(error)
                    else:
                        owner.put([o[start : start + len(part)] for o in outputs])
                    start += len(part)
                self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.result()

    def _take(self) -> list[tuple[_Request, np.ndarray]]:
        """Up to ``size`` rows from the pending requests (called with the lock held)."""
        pieces: list[tuple[_Request, np.ndarray]] = []
        room = self.size
        while room and self._pending:
            request = self._pending[0]
            part = request.rows[request.taken : request.taken + room]
            request.taken += len(part)
            room -= len(part)
            pieces.append((request, part))
            if request.taken == len(request.rows):
                self._pending.pop(0)
        return pieces


class _Request:
    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self.taken = 0
        self.received = 0
        self.parts: list[list[np.ndarray]] = []
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or self.received == len(self.rows)

    def put(self, outputs: list[np.ndarray]) -> None:
        self.parts.append(outputs)
        self.received += len(outputs[0]) if outputs else 0

    def fail(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> list[np.ndarray]:
        import numpy as np  # noqa: PLC0415

        return [np.concatenate([p[i] for p in self.parts]) for i in range(len(self.parts[0]))]


class LoadedModel:
    """A model loaded in this process, shared by its threads (what an analysis receives).

    Attributes
    ----------
    handler : ModelHandler
        The declaration.
    device : str
        The device asked for.
    """

    def __init__(self, handler: ModelHandler, device: str):
        self.handler = handler
        self.device = device
        self._run = handler.load(device)
        self._batcher = _Batcher(self._run, handler.batch)

    def infer(self, rows: np.ndarray) -> list[np.ndarray]:
        """The model's outputs for ``rows`` (axis 0), computed in batches of ``batch`` rows
        shared with the other threads of the process.

        Parameters
        ----------
        rows : np.ndarray [shape=(n, ...)]
            Fixed-length windows (or any rows of the model's input).

        Returns
        -------
        list of np.ndarray [shape=(n, ...)]
            One array per model output.
        """
        return self._batcher.infer(rows)

    def session(self) -> Any:
        """The underlying runtime object where the handler exposes one (onnxruntime
        ``InferenceSession`` for :class:`OnnxModel`): for stateful models that must be
        stepped by hand. Sessions are safe to share between threads."""
        session = getattr(self._run, "session", None)
        if session is None:
            raise ModelError(f"model {self.handler.version!r} exposes no session")
        return session

    @property
    def batch_calls(self) -> int:
        """Batched calls made so far."""
        return self._batcher.calls

    @property
    def batch_rows(self) -> int:
        """Rows inferred so far."""
        return self._batcher.rows


class _Entry:
    def __init__(self, model: LoadedModel):
        self.model = model
        self.leases = 0


_CACHE: dict[tuple[str, str, str], _Entry] = {}
_CACHE_LOCK = threading.Lock()
_LOADS = 0


def _key(handler: ModelHandler, device: str) -> tuple[str, str, str]:
    return (type(handler).__qualname__, identity(handler), device)


def acquire(handler: ModelHandler, device: str) -> LoadedModel:
    """The process' loaded copy of ``handler`` on ``device``, loading it on first use.

    Each call takes a lease: call :func:`release` once per call when done (an engine does
    so when its DoFn is torn down). Loading happens under the cache lock, so two threads
    asking at once load the model once.
    """
    global _LOADS
    key = _key(handler, device)
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is None:
            entry = _Entry(LoadedModel(handler, device))
            _CACHE[key] = entry
            _LOADS += 1
        entry.leases += 1
        return entry.model


def release(handler: ModelHandler, device: str) -> None:
    """Give back a lease from :func:`acquire`; the last one drops the model."""
    key = _key(handler, device)
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is None:
            return
        entry.leases -= 1
        if entry.leases <= 0:
            del _CACHE[key]


def load_count() -> int:
    """Models loaded by this process so far (every load, not only those still held)."""
    return _LOADS


_REPORTED = 0


def unreported_loads() -> int:
    """Loads since the last call (each load is handed out once: a Beam counter sums them over
    the job's worker processes)."""
    global _REPORTED
    with _CACHE_LOCK:
        new, _REPORTED = _LOADS - _REPORTED, _LOADS
        return new


def loaded_models() -> int:
    """Models this process holds now."""
    with _CACHE_LOCK:
        return len(_CACHE)
