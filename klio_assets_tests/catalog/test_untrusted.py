"""Untrusted identifiers and data: track IDs and sources from manifests, sensors and Pub/Sub
messages are validated; symlinks cannot bring files from outside in; stored outputs are never
unpickled."""

from __future__ import annotations

import ast
import os
import pathlib
import re

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from klio_assets.catalog.discovery import (
    MAX_MESSAGE_BYTES,
    check_track_source,
    discover,
    parse_track_message,
)
from klio_assets.errors import ParameterError, TrackIdError, UnsafePathError
from klio_assets.worker.pipeline import build_pipeline
from klio_assets.worker.plan import Layout, RunPlan, plan_analyses
from klio_assets.worker.storage import Storage
from klio_assets_tests.support import sample_analyses, synth

PACKAGE = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def catalog(tmp_path):
    base = tmp_path / "catalog"
    (base / "audio").mkdir(parents=True)
    (base / "audio" / "a.wav").write_bytes(b"RIFF")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"RIFF")
    os.symlink(outside / "secret.wav", base / "audio" / "link.wav")
    return base, outside


@pytest.mark.parametrize(
    ("raw_id", "raw_path", "error", "says"),
    [
        ("../evil", "audio/a.wav", TrackIdError, "is not valid"),
        ("/etc/passwd", "audio/a.wav", TrackIdError, "is not valid"),
        ("gs://b/x", "audio/a.wav", TrackIdError, "is not valid"),
        ("a\nb", "audio/a.wav", TrackIdError, "is not valid"),
        ("x" * 129, "audio/a.wav", TrackIdError, "characters long"),
        (42, "audio/a.wav", TrackIdError, "must be a string"),
        ("t", "../outside/secret.wav", UnsafePathError, "leads outside"),
        ("t", "/etc/passwd", UnsafePathError, "leads outside"),
        ("t", "audio/../../outside/secret.wav", UnsafePathError, "leads outside"),
        ("t", "audio/link.wav", UnsafePathError, "leads outside"),  # a symlink out of the catalog
        ("t", "http://example.com/x.mp3", UnsafePathError, "URI scheme"),
        ("t", "file:///etc/passwd", UnsafePathError, "URI scheme"),
        ("t", "file:/etc/passwd", UnsafePathError, "URI scheme"),
        ("t", "gs://bucket/../other/x.mp3", UnsafePathError, "must not contain '..'"),
        ("t", "audio/a.wav\x00.mp3", UnsafePathError, "control characters"),
        ("t", "audio/\x1b[31ma.wav", UnsafePathError, "control characters"),
        ("t", "", UnsafePathError, "empty"),
        ("t", "a/" * 3000, UnsafePathError, "the limit is 4096"),
        ("t", ["audio/a.wav"], UnsafePathError, "must be a string"),
    ],
)
def test_bad_track_ids_and_sources_are_refused_with_a_clear_error(
    catalog, raw_id, raw_path, error, says
):
    base, _ = catalog
    with pytest.raises(error, match=says.replace("(", r"\(").replace("[", r"\[")):
        check_track_source(raw_id, raw_path, base=str(base))


def test_good_sources_are_accepted_and_symlinks_only_into_allowed_roots(catalog):
    base, outside = catalog
    assert check_track_source(" t1 ", "audio/a.wav", base=str(base)) == (
        "t1",
        str(base / "audio" / "a.wav"),
    )
    assert check_track_source("t2", "gs://bucket/x y.mp3", base=str(base)) == (
        "t2",
        "gs://bucket/x y.mp3",
    )
    linked = check_track_source("t3", "audio/link.wav", base=str(base), roots=[str(outside)])
    assert linked == ("t3", str(base / "audio" / "link.wav"))  # allowed when configured


def test_manifest_rows_through_symlinked_files_or_folders_stay_inside(catalog):
    base, outside = catalog
    os.symlink(outside, base / "linked_folder")
    os.symlink(base / "audio", base / "inner_folder")  # a link that stays inside is fine
    (base / "tracks.csv").write_text(
        "track_id,path\n"
        "a,audio/a.wav\n"
        "b,inner_folder/a.wav\n"
        "c,audio/link.wav\n"
        "d,linked_folder/secret.wav\n"
        "e,audio/missing.wav\n"
    )
    found = discover(manifest=str(base / "tracks.csv"))
    assert [t for t, _ in found.tracks] == ["a", "b", "e"]
    assert [what.rsplit(":", 1)[1] for what, _ in found.rejected] == ["4", "5"]
    assert all("leads outside" in reason for _, reason in found.rejected)


def test_pubsub_style_messages_are_validated(catalog):
    base, outside = catalog
    roots = [str(base)]
    good = parse_track_message(b'{"track_id": "t1", "uri": "s3://bucket/t1.flac"}', roots=roots)
    assert good == ("t1", "s3://bucket/t1.flac")
    local = parse_track_message(f'{{"track_id": "t2", "uri": "{base}/audio/a.wav"}}', roots=roots)
    assert local == ("t2", f"{base}/audio/a.wav")
    bad = [
        (b"not json", ParameterError, "not JSON"),
        (b"\xff\xfe", ParameterError, "not JSON"),
        (b'["t1", "gs://b/x"]', ParameterError, "JSON object with 'track_id' and 'uri'"),
        (b'{"track_id": "t1"}', ParameterError, "JSON object with 'track_id' and 'uri'"),
        (b'{"track_id": "../t", "uri": "gs://b/x"}', TrackIdError, "is not valid"),
        (b'{"track_id": "t", "uri": "audio/a.wav"}', UnsafePathError, "must be absolute"),
        (
            f'{{"track_id": "t", "uri": "{outside}/secret.wav"}}'.encode(),
            UnsafePathError,
            "leads outside",
        ),
        (
            f'{{"track_id": "t", "uri": "{base}/audio/link.wav"}}'.encode(),
            UnsafePathError,
            "leads outside",
        ),
        (b'{"track_id": "t", "uri": "ftp://h/x"}', UnsafePathError, "URI scheme"),
        (
            b'{"track_id": "t", "uri": "' + b"x" * MAX_MESSAGE_BYTES + b'"}',
            ParameterError,
            "over the limit",
        ),
    ]
    for data, error, says in bad:
        with pytest.raises(error, match=says):
            parse_track_message(data, roots=roots)
    with pytest.raises(UnsafePathError, match="none configured"):
        parse_track_message(f'{{"track_id": "t", "uri": "{base}/audio/a.wav"}}', roots=[])


def test_every_message_format_goes_through_the_one_confined_parser(catalog):
    base, outside = catalog
    roots = [str(base)]
    finalize = {"bucketId": "bucket", "eventType": "OBJECT_FINALIZE"}
    good = [
        (
            b"",
            {**finalize, "objectId": "in/My Song.flac"},
            ("My-Song", "gs://bucket/in/My Song.flac"),
        ),
        (b"GS://bucket/in/p2.mp3", None, ("p2", "gs://bucket/in/p2.mp3")),  # scheme normalized
        (b" s3://bucket/p3.wav\n", None, ("p3", "s3://bucket/p3.wav")),
        (b'{"uri": "gs://bucket/x/p4.ogg"}', None, ("p4", "gs://bucket/x/p4.ogg")),
        (f"{base}/audio/a.wav".encode(), None, ("a", f"{base}/audio/a.wav")),
        (b"known-track", None, ("known-track", None)),  # an ID alone: a catalogued track
    ]
    for data, attributes, expected in good:
        assert parse_track_message(data, roots=roots, attributes=attributes) == expected
    bad = [
        (b"", {**finalize, "objectId": "in/notes.txt"}, ParameterError, "not an audio file name"),
        (
            b"",
            {**finalize, "eventType": "OBJECT_DELETE", "objectId": "a.wav"},
            ParameterError,
            "not a new object",
        ),
        (b"", {**finalize, "objectId": "in/../../z.wav"}, UnsafePathError, "must not contain '..'"),
        (b"gs://bucket/./z.wav", None, UnsafePathError, "must not contain '.' segments"),
        (b"gs://Bad_Bucket!/z.wav", None, UnsafePathError, "no valid bucket name"),
        (b"gs://bucket/folder/", None, UnsafePathError, "not an object"),
        (b"/etc/passwd", None, UnsafePathError, "leads outside"),
        (f"{outside}/secret.wav".encode(), None, UnsafePathError, "leads outside"),
        (b"[" * 30000 + b"]" * 30000, None, ParameterError, "nests JSON 30000 levels"),
        (
            b'{"a": "[[[[[[[[[[[[", "uri": ' + b"[" * 20 + b"]" * 20 + b"}",
            None,
            ParameterError,
            "nests JSON 21 levels",
        ),
        (b'{"uri": "gs://bucket/a\\u0007.wav"}', None, UnsafePathError, "control characters"),
        (b'{"uri": 5}', None, UnsafePathError, "must be a string"),
        (b'{"track_id": "t"}', None, ParameterError, "a track ID alone is sent as plain text"),
        (b"two words", None, TrackIdError, "not JSON, a gs:// or s3:// URI, a path or a track ID"),
    ]
    for data, attributes, error, says in bad:
        with pytest.raises(error, match=re.escape(says)):
            parse_track_message(data, roots=roots, attributes=attributes)
    # Strings are not nesting: brackets inside them do not count towards the depth.
    assert parse_track_message(
        b'{"note": "' + b"[" * 100 + b'", "uri": "gs://bucket/q.wav"}', roots=roots
    ) == ("q", "gs://bucket/q.wav")


def test_add_refuses_object_uris_with_dot_segments(tmp_path):
    found = discover(
        ["gs://bucket/../../other/z.wav", "s3://bucket/a/./b.wav", "gs://bucket/in/ok.wav"]
    )
    assert found.tracks == [("ok", "gs://bucket/in/ok.wav")]
    assert [what for what, _ in found.rejected] == [
        "gs://bucket/../../other/z.wav",
        "s3://bucket/a/./b.wav",
    ]
    assert "must not contain '..'" in found.rejected[0][1]


def test_cli_add_refuses_a_dot_dot_uri_and_registers_the_rest(home):
    from click.testing import CliRunner

    from klio_assets.cli.main import main

    result = CliRunner().invoke(
        main, ["add", "gs://bucket/../../other/z.wav", "gs://bucket/ok.wav"]
    )
    assert result.exit_code == 1
    assert "registered 1 new track " in result.output
    assert "refused gs://bucket/../../other/z.wav" in result.output
    assert "must not contain '..'" in result.output


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``: proof that a pickle was executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_pickle_planted_as_a_stored_output_is_never_unpickled(tmp_path, catalog_tracks):
    analyses = [sample_analyses.frame_energy, sample_analyses.total_energy]
    planned = plan_analyses(analyses)
    root = str(tmp_path / "out")
    storage = Storage(root)
    track = catalog_tracks["wav44"]
    planted = Layout(storage).output_uri(planned["frame_energy"], track.track_id)
    marker = str(tmp_path / "pickle-was-executed")
    os.makedirs(os.path.dirname(planted))
    with open(planted, "wb") as fh:  # a valid .npy header whose data is a pickle
        np.save(fh, np.array([_Payload(marker)], dtype=object), allow_pickle=True)

    for selected in (
        ["total_energy"],
        ["frame_energy"],
    ):  # read as an upstream; described as skipped
        plan = RunPlan(run_id="r", storage_root=root, analyses=planned, selected=selected)
        with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
            build_pipeline(pipeline, plan, [{"track_id": track.track_id, "uri": track.path}])
        result = storage.read_json(Layout(storage).result_uri("r", track.track_id))["analyses"]
        assert not os.path.exists(marker), "a stored output was unpickled"
        if selected == ["total_energy"]:
            assert result["total_energy"]["status"] == "failed"
            assert "allow_pickle=False" in result["total_energy"]["reason"]
        else:
            assert result["frame_energy"]["status"] == "skipped"
            assert "Python objects" in result["frame_energy"]["metadata"]["describe_error"]


def test_package_code_never_loads_pickles():
    """No pickle/dill/joblib/shelve loading in the package, and every np.load says allow_pickle=False."""
    offenders = []
    for path in PACKAGE.joinpath("klio_assets").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + (
                    [node.module] if isinstance(node, ast.ImportFrom) else []
                )
                if any(
                    n and n.split(".")[0] in ("pickle", "dill", "joblib", "shelve", "cloudpickle")
                    for n in names
                ):
                    offenders.append(f"{path.name}:{node.lineno} imports a pickle library")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                    getattr(node.func.value, "id", None) in ("np", "numpy"):  # fmt: skip
                kw = {k.arg: k.value for k in node.keywords}
                if not (
                    isinstance(kw.get("allow_pickle"), ast.Constant)
                    and kw["allow_pickle"].value is False
                ):
                    offenders.append(
                        f"{path.name}:{node.lineno} np.load without allow_pickle=False"
                    )
    assert offenders == []


def test_cli_add_reads_a_careless_manifest_line_by_line(home, tmp_path):
    """An Excel byte-order mark, a field over the CSV limit, a Latin-1 byte and an unterminated
    quote: each bad line is refused with its line number and the good lines around it are
    registered (once the BOM refused the whole manifest, a bad line raised a traceback that
    registered nothing, and an open quote swallowed the next line)."""
    from click.testing import CliRunner

    from klio_assets.cli.main import main

    for name in ("a", "b", "c", "d"):
        synth.write(str(tmp_path / f"{name}.wav"), synth.sine(440, 0.1, 8000), 8000)
    manifest = tmp_path / "tracks.csv"
    manifest.write_bytes(
        b"\xef\xbb\xbftrack_id,path\r\n"
        b"a,a.wav\r\n"
        b"big," + b"x" * 200_000 + b"\r\n"
        b"latin,caf\xe9.wav\r\n"
        b'quoted,"b.wav\r\n'
        b"c,c.wav\r\n"
        b"d,d.wav\n"
    )
    os.mkfifo(tmp_path / "pipe.wav")
    result = CliRunner().invoke(
        main, ["add", "--manifest", str(manifest), str(tmp_path / "pipe.wav"), "/dev/zero"]
    )
    assert result.exit_code == 1
    assert "registered 3 new tracks" in result.output  # a, c and d
    out = result.output
    assert f"refused {manifest}:3: not a CSV row: field larger than field limit" in out
    assert f"refused {manifest}:4: not UTF-8" in out
    assert f"refused {manifest}:5: not a CSV row: unexpected end of data" in out
    assert f"refused {tmp_path / 'pipe.wav'}: is a FIFO (named pipe), not an audio file" in out
    assert "refused /dev/zero: is a device, not an audio file" in out
    assert "Traceback" not in out
