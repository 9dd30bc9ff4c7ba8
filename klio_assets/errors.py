"""The one exception hierarchy of klio-assets.

Every error raised on purpose by the package derives from :class:`KlioAssetsError`.
Messages name the track, the file and what is wrong, and where possible the fix::

    track 'a1b2': cannot decode /audio/a1b2.mp3: file is truncated after 12.3 s

This module imports nothing from Dagster or Beam: workers and the CLI share it.
"""

from __future__ import annotations


class KlioAssetsError(Exception):
    """Base class of every error raised by klio-assets.

    Attributes
    ----------
    permanent : bool
        Whether the same input fails the same way again (not audio, truncated, over a limit,
        a refused parameter): a track failing so is remembered and not retried until its
        file or the analysis' version changes. Transient errors (storage, timeouts, a lost
        worker) are retried a bounded number of times (:func:`is_permanent`).
    """

    permanent: bool = True


class ParameterError(KlioAssetsError):
    """A setting, argument or analysis parameter has an invalid value."""


class TrackIdError(ParameterError):
    """A track ID is not acceptable (characters, length, path tricks)."""


class CatalogError(KlioAssetsError):
    """The track catalog cannot answer (unknown track, conflicting registration)."""

    permanent = False


class StorageError(KlioAssetsError):
    """Reading or writing the storage root failed."""

    #: Whether trying again at once may succeed (connection reset, throttling, 5xx).
    transient: bool = False
    #: A track failing on storage is tried again in a later run (full disk, lost mount).
    permanent = False


class TransientStorageError(StorageError):
    """A storage error that may go away when retried."""

    transient = True


class UnsafePathError(StorageError, ParameterError):
    """A path or URI would escape the root it must stay under."""

    permanent = True


class TrackError(KlioAssetsError):
    """One track cannot be processed; the rest of its batch goes on.

    Parameters
    ----------
    track_id : str
        The track that failed.
    uri : str
        The file involved (source audio or an upstream output).
    problem : str
        What is wrong, in plain words.
    """

    def __init__(self, track_id: str, uri: str, problem: str):
        self.track_id = track_id
        self.uri = uri
        self.problem = problem
        super().__init__(f"track {track_id!r}: {uri}: {problem}")


class DecodeError(TrackError):
    """The source audio cannot be decoded."""

    def __init__(self, track_id: str, uri: str, problem: str):
        super().__init__(track_id, uri, problem)
        self.args = (f"track {track_id!r}: cannot decode {uri}: {problem}",)


class DecodeTimeoutError(DecodeError):
    """Decoding a source took longer than the per-track time limit; the decoder was stopped.

    Not retried with another decoder: a second attempt would only double the time lost.
    Transient for a later run, though (a loaded machine); the count of such retries is bounded.
    """

    permanent = False


class MissingInputError(TrackError):
    """An input the analysis needs does not exist (source file or upstream output)."""


class OutputError(KlioAssetsError):
    """An analysis' result cannot be written as a valid file of its declared format (e.g.
    audio with no frames: libsndfile writes a 0-byte FLAC that no reader opens)."""


class BeamJobError(KlioAssetsError):
    """The Beam job did not finish successfully.

    Parameters
    ----------
    job_id : str
        The runner's job ID (or a local description).
    state : str
        The final state reported by the runner.
    """

    permanent = False

    def __init__(self, message: str, *, job_id: str = "", state: str = ""):
        self.job_id = job_id
        self.state = state
        super().__init__(message)


#: Errors from outside the package that say nothing about the input: a later run may succeed.
_TRANSIENT_BUILTINS: tuple[type[BaseException], ...] = (
    TimeoutError,
    MemoryError,
    ConnectionError,
    InterruptedError,
)
#: OS errors that do describe the input (a file that is not there, a folder for a file).
_PERMANENT_OS_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_permanent(error: BaseException) -> bool:
    """Whether ``error`` would happen again on the same input with the same code.

    Deterministic: the package's own errors say so (:attr:`KlioAssetsError.permanent`:
    decoding, limits, parameters); any other exception raised by an analysis is a bug that
    the same input triggers again. Transient: storage errors, timeouts, memory, connections,
    and OS errors other than a missing file.

    Parameters
    ----------
    error : BaseException

    Returns
    -------
    bool
    """
    if isinstance(error, KlioAssetsError):
        return error.permanent
    if isinstance(error, _PERMANENT_OS_ERRORS):
        return True
    return not isinstance(error, (*_TRANSIENT_BUILTINS, OSError))


#: Longest one-line description of an error (:func:`one_line`).
ONE_LINE_CHARS = 300


def one_line(error: BaseException | str) -> str:
    """The first line of an error, without Beam's ``[while running '...']`` trail, at most
    :data:`ONE_LINE_CHARS` characters (the middle of a longer one is cut): what a user is shown of a job-level failure (a Beam
    error's message carries a whole traceback, naming whichever track it was on).

    Parameters
    ----------
    error : BaseException or str
        An exception (its class name is prefixed when not already there) or a message.
    """
    if isinstance(error, BaseException):
        text = str(error).strip()
        name = type(error).__name__
        text = text if text.startswith(name) or isinstance(error, KlioAssetsError) else (
            f"{name}: {text}" if text else name
        )  # fmt: skip
    else:
        text = error.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else "unknown error"
    first = first.split(" [while running", 1)[0]
    if len(first) <= ONE_LINE_CHARS:
        return first
    # The middle goes: the start says what was done, the end why it failed.
    half = (ONE_LINE_CHARS - 5) // 2
    return f"{first[:half]} ... {first[-half:]}"
