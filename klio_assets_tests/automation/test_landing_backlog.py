"""Draining a landing backlog over several capped ticks lists the folder once, and still takes
every file exactly once, in cursor order, as it is at the tick that takes it."""

import os
import time

import pytest

from klio_assets.automation.landing import CLOCK_MARGIN_S
from klio_assets.automation.landing import folder as folder_module
from klio_assets.automation.landing.listing import scan_landing


def _files(folder, names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(b"RIFF")
        time.sleep(0.002)  # distinct ctimes: cursor order is creation order


def _settle():
    time.sleep(CLOCK_MARGIN_S + 0.1)


@pytest.fixture
def scandirs(monkeypatch, tmp_path):
    """The folders under tmp_path that os.scandir read."""
    listed = []
    real = os.scandir

    def counting(path="."):
        if str(path).startswith(str(tmp_path)):
            listed.append(os.path.relpath(path, tmp_path))
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    return listed


def _drain(landing, cap, scandirs, after=None):
    """Files taken tick by tick until none is left, and the folders each of those ticks listed."""
    taken, listed = [], []
    while True:
        before = len(scandirs)
        listing = scan_landing(landing, settle_s=0, after=after, max_files=cap)
        if not listing.files:
            return taken, listed
        listed.append(sorted(scandirs[before:]))
        taken.extend(os.path.basename(f.uri) for f in listing.files)
        after = listing.files[-1].key


def test_a_backlog_is_listed_once_and_drained_in_cursor_order(tmp_path, scandirs):
    landing = str(tmp_path / "landing")
    names = [f"t{i:02d}.wav" for i in range(10)]
    _files(landing, names[:6])
    _files(os.path.join(landing, "sub"), names[6:])
    _settle()
    taken, listed = _drain(landing, 3, scandirs)
    assert taken == names
    # listed at the first tick; the three others took their files from memory
    assert listed == [["landing", os.path.join("landing", "sub")], [], [], []]
    assert os.path.abspath(landing) not in folder_module._REMEMBERED  # no backlog: forgotten


def test_a_new_file_in_a_remembered_folder_is_found(tmp_path, scandirs):
    landing = str(tmp_path / "landing")
    _files(landing, ["a.wav", "b.wav", "c.wav"])
    _settle()
    first = scan_landing(landing, settle_s=0, max_files=1)
    _files(landing, ["d.wav"])  # the folder's ctime moves: it is listed again
    _settle()
    taken, listed = _drain(landing, 1, scandirs, after=first.files[-1].key)
    assert taken == ["b.wav", "c.wav", "d.wav"] and listed == [["landing"], [], []]


def test_a_file_rewritten_in_place_is_not_taken_with_its_remembered_ctime(tmp_path):
    landing = str(tmp_path / "landing")
    _files(landing, ["a.wav", "b.wav", "c.wav"])
    _settle()
    first = scan_landing(landing, settle_s=0, max_files=1)
    with open(os.path.join(landing, "b.wav"), "ab") as fh:  # written again: not settled
        fh.write(b"more")
    now = scan_landing(landing, settle_s=0, after=first.files[-1].key, max_files=1)
    assert [os.path.basename(f.uri) for f in now.files] == ["c.wav"] and now.unsettled == 1
    rewritten = os.stat(os.path.join(landing, "b.wav")).st_ctime_ns
    _settle()
    later = scan_landing(landing, settle_s=0, after=now.files[-1].key, max_files=1)
    assert [(f.ctime_ns, os.path.basename(f.uri)) for f in later.files] == [(rewritten, "b.wav")]


def test_a_cursor_that_goes_back_lists_the_folder_again(tmp_path):
    """A tick that failed after listing is evaluated again from the old cursor: nothing is lost."""
    landing = str(tmp_path / "landing")
    _files(landing, ["a.wav", "b.wav", "c.wav", "d.wav"])
    _settle()
    first = scan_landing(landing, settle_s=0, max_files=2)
    scan_landing(landing, settle_s=0, after=first.files[-1].key, max_files=1)  # trims a, b
    again = scan_landing(landing, settle_s=0, max_files=2)  # from the beginning
    assert [os.path.basename(f.uri) for f in again.files] == ["a.wav", "b.wav"]
