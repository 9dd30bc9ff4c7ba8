"""Writing an analysis: one plain per-track function and a declaration of what it needs.

An analysis author writes a function and declares its inputs, its output kind and a code
version; the framework does the rest (decode, storage paths, existence checks, retries,
metadata, the Beam step and the Dagster asset)::

    from klio_assets import AudioFile, SourceAudio, analysis, param

    @analysis(
        inputs={"audio": SourceAudio(sample_rate=param("sample_rate"), mono=True, stream=True)},
        output=AudioFile(format="FLAC"),
        code_version="1",
        params=DownsampleParams,
    )
    def downsampled_audio(audio):
        return audio

Inputs are either the track's source audio, decoded at a chosen rate and channel layout
(:class:`SourceAudio`), or another analysis' output for the same track (:class:`Upstream`).
The function receives them as keyword arguments under the names declared, plus ``params``
(the analysis' parameters) and ``track`` (a :class:`TrackContext`) if its signature asks for
them. It returns the output value, or a :class:`Result` carrying extra metadata.

This module imports nothing from Dagster: analyses run on Beam workers.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from klio_assets.errors import ParameterError
from klio_assets.worker.models import LoadedModel, ModelHandler, OnnxModel, TorchModel, identity
from klio_assets.worker.outputs import OutputKind
from klio_assets.worker.values import Audio, AudioStream, Result, TrackContext

#: The values live in :mod:`klio_assets.worker.values`; authors import them from here.
__all__ = [
    "Analysis",
    "Audio",
    "AudioStream",
    "LoadedModel",
    "OnnxModel",
    "Param",
    "Result",
    "SourceAudio",
    "TorchModel",
    "TrackContext",
    "Upstream",
    "analysis",
    "param",
]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True)
class Param:
    """A reference to one of the analysis' parameters, resolved per deployment."""

    name: str


def param(name: str) -> Param:
    """Refer to the analysis parameter ``name`` in an input declaration.

    Examples
    --------
    >>> SourceAudio(sample_rate=param("sample_rate"), mono=True)  # doctest: +SKIP
    """
    return Param(name)


@dataclass(frozen=True)
class SourceAudio:
    """Input: the track's source audio, decoded.

    Parameters
    ----------
    sample_rate : int, Param or None
        Target rate in Hz (soxr, high quality); ``None`` keeps the native rate.
    mono : bool
        Downmix to one channel.
    stream : bool
        Deliver an :class:`AudioStream` of blocks (memory independent of duration) instead of
        one :class:`Audio` array.
    """

    sample_rate: int | Param | None = None
    mono: bool = False
    stream: bool = False


@dataclass(frozen=True)
class Upstream:
    """Input: another analysis' output for the same track.

    Parameters
    ----------
    name : str
        The other analysis.
    stream : bool
        For audio outputs, deliver an :class:`AudioStream` instead of one :class:`Audio`.
    """

    name: str
    stream: bool = False


Input = SourceAudio | Upstream


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Analysis:
    """A per-track analysis: its function and declarations (built by :func:`analysis`).

    Attributes
    ----------
    name : str
        Asset name and storage folder.
    fn : callable
    inputs : mapping of str to SourceAudio or Upstream
    output : OutputKind
    code_version : str
        Bump it when the function's results change.
    params_model : pydantic model class or None
    description : str
    share_by_content : bool
        Tracks with identical source bytes share one computation.
    model : ModelHandler or None
        The model the function receives as ``model`` (a :class:`LoadedModel`), loaded once
        per worker process; its identity is part of the output version.
    """

    name: str
    fn: Callable[..., Any]
    inputs: Mapping[str, Input]
    output: OutputKind
    code_version: str
    params_model: type[BaseModel] | None = None
    description: str = ""
    share_by_content: bool = True
    model: ModelHandler | None = None
    _wants: frozenset[str] = frozenset()

    @property
    def module(self) -> str:
        """Module that defines the analysis (how workers import it)."""
        return self.fn.__module__

    @property
    def upstreams(self) -> list[str]:
        """Names of the analyses whose outputs this one reads."""
        return [i.name for i in self.inputs.values() if isinstance(i, Upstream)]

    @property
    def reads_source(self) -> bool:
        """Whether this analysis decodes the source audio."""
        return any(isinstance(i, SourceAudio) for i in self.inputs.values())

    def params(self, overrides: Mapping[str, Any] | None = None) -> BaseModel | None:
        """The parameters with per-deployment ``overrides`` applied (validated)."""
        if self.params_model is None:
            if overrides:
                raise ParameterError(
                    f"analysis {self.name!r} takes no parameters, got {dict(overrides)}"
                )
            return None
        unknown = sorted(set(overrides or {}) - set(self.params_model.model_fields))
        if unknown:  # a misspelt name would otherwise be ignored, and the default used
            raise ParameterError(
                f"analysis {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters: {', '.join(self.params_model.model_fields)}"
            )
        try:
            return self.params_model(**dict(overrides or {}))
        except ValidationError as exc:
            raise ParameterError(f"analysis {self.name!r}: invalid parameters: {exc}") from exc

    def resolve_input(self, spec: Input, params: BaseModel | None) -> Input:
        """``spec`` with :class:`Param` references replaced by parameter values."""
        if isinstance(spec, SourceAudio) and isinstance(spec.sample_rate, Param):
            if params is None or not hasattr(params, spec.sample_rate.name):
                raise ParameterError(
                    f"analysis {self.name!r}: input refers to unknown parameter "
                    f"{spec.sample_rate.name!r}"
                )
            return SourceAudio(
                sample_rate=int(getattr(params, spec.sample_rate.name)),
                mono=spec.mono,
                stream=spec.stream,
            )
        return spec

    def version(self, params: BaseModel | None, upstream_versions: Mapping[str, str]) -> str:
        """The version of this analysis' outputs: code version, plus a digest of whatever else
        changes them (parameters, upstream versions). It names the storage folder."""
        extra: dict[str, Any] = {}
        if params is not None:
            extra["params"] = params.model_dump(mode="json")
        if self.upstreams:
            extra["upstream"] = {u: upstream_versions[u] for u in self.upstreams}
        if self.model is not None:  # new weights recompute; the same weights never do
            extra["model"] = identity(self.model)
        return self.code_version if not extra else f"{self.code_version}-{_digest(extra)}"

    def call(
        self,
        values: Mapping[str, Any],
        *,
        params: BaseModel | None,
        track: TrackContext,
        model: LoadedModel | None = None,
    ) -> Result:
        """Run the function on one track's inputs; always returns a :class:`Result`."""
        kwargs = dict(values)
        if "params" in self._wants:
            kwargs["params"] = params
        if "track" in self._wants:
            kwargs["track"] = track
        if self.model is not None:
            if model is None:
                raise ParameterError(f"analysis {self.name!r} needs its model loaded")
            kwargs["model"] = model
        out = self.fn(**kwargs)
        return out if isinstance(out, Result) else Result(out)


def analysis(
    *,
    inputs: Mapping[str, Input],
    output: OutputKind,
    code_version: str,
    params: type[BaseModel] | None = None,
    name: str | None = None,
    share_by_content: bool = True,
    model: ModelHandler | None = None,
) -> Callable[[Callable[..., Any]], Analysis]:
    """Turn a per-track function into an :class:`Analysis` (an asset and a Beam step).

    Parameters
    ----------
    inputs : mapping of str to SourceAudio or Upstream
        Keyword argument name to what it receives.
    output : OutputKind
        :class:`AudioFile`, :class:`Json`, :class:`NumpyArray`, :class:`TableRow` or
        :class:`Image`.
    code_version : str
        Bump it whenever results change; outputs of other versions are not reused.
    params : pydantic model class, optional
        The analysis' parameters, with defaults; deployments override them
        (``KLIO_ASSETS_PARAMS``).
    name : str, optional
        Defaults to the function's name.
    share_by_content : bool
        Compute once for tracks whose source bytes are identical.
    model : ModelHandler, optional
        A model (:class:`OnnxModel`, or any :class:`~klio_assets.worker.models.ModelHandler`)
        the function receives as its ``model`` argument, a
        :class:`~klio_assets.worker.models.LoadedModel` loaded once per worker process and
        shared by its threads; ``model.infer(rows)`` batches. Its identity (version and the
        sha256 of its weights) is part of the output version.

    Returns
    -------
    callable
        A decorator returning the :class:`Analysis`.
    """

    def wrap(fn: Callable[..., Any]) -> Analysis:
        analysis_name = name or fn.__name__
        if not analysis_name or not set(analysis_name) <= _NAME_CHARS or analysis_name[0].isdigit():
            raise ParameterError(
                f"analysis name {analysis_name!r} must be lowercase letters, digits and '_'"
            )
        if not code_version or "/" in code_version or not code_version.isprintable():
            raise ParameterError(
                f"analysis {analysis_name!r}: code_version {code_version!r} is not valid"
            )
        signature = inspect.signature(fn)
        accepted = set(signature.parameters)
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        missing = [n for n in inputs if n not in accepted and not takes_kwargs]
        if missing:
            raise ParameterError(
                f"analysis {analysis_name!r}: inputs {missing} are not parameters of {fn.__name__}()"
            )
        for input_name, spec in inputs.items():
            if not isinstance(spec, (SourceAudio, Upstream)):
                raise ParameterError(
                    f"analysis {analysis_name!r}: input {input_name!r} must be SourceAudio or "
                    f"Upstream, got {spec!r}"
                )
        if model is not None:
            if not isinstance(model, ModelHandler):
                raise ParameterError(
                    f"analysis {analysis_name!r}: model {model!r} is not a model declaration "
                    "(OnnxModel or a ModelHandler)"
                )
            if "model" not in accepted and not takes_kwargs:
                raise ParameterError(
                    f"analysis {analysis_name!r} declares a model: {fn.__name__}() needs a "
                    "'model' parameter"
                )
        wants = frozenset(n for n in ("params", "track") if n in accepted)
        return Analysis(
            name=analysis_name,
            fn=fn,
            inputs=dict(inputs),
            output=output,
            code_version=str(code_version),
            params_model=params,
            description=inspect.getdoc(fn) or "",
            share_by_content=share_by_content,
            model=model,
            _wants=wants,
        )

    return wrap
