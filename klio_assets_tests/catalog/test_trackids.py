"""Track IDs from outside are untrusted: what is accepted, what is refused, what is derived."""

import pytest

from klio_assets.catalog.trackids import MAX_TRACK_ID_LENGTH, track_id_from_name, validate_track_id
from klio_assets.errors import TrackIdError


@pytest.mark.parametrize("good", ["a", "track-001", "A.b_c-9", "x" * MAX_TRACK_ID_LENGTH])
def test_valid_track_ids_are_accepted(good):
    assert validate_track_id(good) == good


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("../etc/passwd", "'/'"),
        ("..", "start with a letter or digit"),
        ("a..b", "'..'"),
        ("/abs/path", "'/'"),
        ("gs://bucket/x", "not allowed"),
        ("file:x", "':'"),
        ("a\x00b", "\\x00"),
        ("tab\there", "\\t"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        (".hidden", "start with a letter or digit"),
        ("", "empty"),
        ("x" * (MAX_TRACK_ID_LENGTH + 1), "characters long"),
        ("ünïcode", "not allowed"),
    ],
)
def test_unsafe_track_ids_are_refused_with_the_rule_broken(bad, says):
    with pytest.raises(TrackIdError) as err:
        validate_track_id(bad)
    assert says in str(err.value)


def test_non_string_track_id_is_refused():
    with pytest.raises(TrackIdError, match="string"):
        validate_track_id(42)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("My Song.mp3", "My-Song"),
        ("Sonate für Klavier (Live).flac", "Sonate-fur-Klavier-Live"),
        ("a..b.ogg", "a.b"),
        ("..hidden.wav", "hidden"),
        ('it\'s "quoted".wav', "it-s-quoted"),
    ],
)
def test_track_id_from_file_name_is_made_safe(name, expected):
    assert track_id_from_name(name) == expected


def test_names_without_ascii_keep_apart_through_a_hash():
    a, b = track_id_from_name("日本語.wav"), track_id_from_name("中文.wav")
    assert a != b
    assert validate_track_id(a) and validate_track_id(b)


def test_long_names_are_shortened_to_valid_distinct_ids():
    a = track_id_from_name("x" * 300 + "a.wav")
    b = track_id_from_name("x" * 300 + "b.wav")
    assert len(a) <= MAX_TRACK_ID_LENGTH and a != b
