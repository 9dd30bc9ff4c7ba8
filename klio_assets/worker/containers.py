"""What container headers announce, read with bounded effort from untrusted files.

libsndfile answers most questions about a file, but three kinds of file make its answer wrong
in a way that matters:

* a WAV or RF64 whose header announces more audio than the file holds (libsndfile quietly
  reports what is there, so a truncated file, or a header claiming 30 hours, would go
  unnoticed): :func:`riff_announced_frames` reads the ``data`` size, from ``ds64`` for RF64;
* an MP3 without a Xing/Info header but with a large ID3v2 tag (embedded cover art): the
  length libsndfile estimates from the file size counts the tag as audio, and a valid file
  looks truncated: :func:`mp3_audio_fraction` says which share of the bytes is audio;
* a chained Ogg (several logical streams one after the other): libsndfile decodes the first
  stream only: :func:`ogg_chain` lists the streams and their lengths.

Every reader stops after a fixed number of chunks, pages or bytes: a hostile file cannot make
it walk forever.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

#: Chunks a RIFF/RF64 reader walks before giving up (a WAV has a handful).
_MAX_CHUNKS = 64
#: Ogg pages read before giving up (a 24-hour Vorbis file has ~2M pages of 4 KiB at most).
_MAX_OGG_PAGES = 5_000_000
_BOS = 0x02  # Ogg page header type: beginning of a logical stream


def riff_announced_frames(path: str) -> int | None:
    """Frames a RIFF/WAVE or RF64 header announces (``data`` size / block align), if readable.

    RF64 (and BW64) files keep the true sizes in a ``ds64`` chunk and put ``0xFFFFFFFF`` in the
    ``data`` chunk's size field.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
            return None
        block_align = None
        ds64_data_size = None
        for _ in range(_MAX_CHUNKS):
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id in (b"fmt ", b"ds64"):
                body = fh.read(min(size, 64))
                if chunk_id == b"fmt " and len(body) >= 14:
                    block_align = struct.unpack("<H", body[12:14])[0]
                elif chunk_id == b"ds64" and len(body) >= 16:
                    ds64_data_size = struct.unpack("<Q", body[8:16])[0]
                fh.seek(size - len(body) + (size & 1), os.SEEK_CUR)
            elif chunk_id == b"data":
                if size == 0xFFFFFFFF and ds64_data_size is not None:
                    size = ds64_data_size
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return int(size // block_align)
            else:
                fh.seek(size + (size & 1), os.SEEK_CUR)
    return None


def mp3_audio_fraction(path: str) -> float | None:
    """Share of an MP3 file's bytes that is audio, when a leading ID3v2 tag distorts
    libsndfile's length estimate; None when the estimate needs no correction.

    The estimate is exact when the first frame carries a Xing, Info or VBRI header (the frame
    count), so no correction is made then.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(10)
        if len(head) < 10 or head[:3] != b"ID3":
            return None
        syncsafe = head[6:10]
        if any(b & 0x80 for b in syncsafe):
            return None  # not a valid tag size: let the decoder judge the file
        tag = (syncsafe[0] << 21) | (syncsafe[1] << 14) | (syncsafe[2] << 7) | syncsafe[3]
        tag += 10 + (10 if head[5] & 0x10 else 0)  # header, and footer if flagged
        if tag >= size:
            return None
        fh.seek(tag)
        first_frame = fh.read(256)
    if any(marker in first_frame for marker in (b"Xing", b"Info", b"VBRI")):
        return None
    return (size - tag) / size


@dataclass(frozen=True)
class OggStream:
    """One logical stream of an Ogg file.

    Attributes
    ----------
    serial : int
    codec : str
        ``"vorbis"``, ``"opus"``, ``"flac"`` or ``"unknown"``.
    sample_rate : int
        Of the decoded audio (48000 for Opus), 0 if unknown.
    channels : int
        0 if unknown.
    frames : int
        Length in frames (last granule position, less Opus' pre-skip).
    """

    serial: int
    codec: str
    sample_rate: int
    channels: int
    frames: int


def _ogg_identify(packet: bytes) -> tuple[str, int, int, int]:
    """(codec, sample rate, channels, pre-skip) from the first packet of a stream."""
    if packet[:7] == b"\x01vorbis" and len(packet) >= 16:
        channels, rate = packet[11], struct.unpack("<I", packet[12:16])[0]
        return "vorbis", rate, channels, 0
    if packet[:8] == b"OpusHead" and len(packet) >= 12:
        channels, pre_skip = packet[9], struct.unpack("<H", packet[10:12])[0]
        return "opus", 48000, channels, pre_skip
    if packet[:5] == b"\x7fFLAC":
        return "flac", 0, 0, 0
    return "unknown", 0, 0, 0


def ogg_chain(path: str) -> list[OggStream] | None:
    """The logical streams of a *chained* Ogg file, in order; None when the file is not
    chained (one stream, or streams multiplexed side by side) or is not Ogg.

    A stream begins on a page flagged BOS; a chain is a BOS page that comes after pages of an
    earlier stream.
    """
    with open(path, "rb") as fh:
        if fh.read(4) != b"OggS":
            return None
        fh.seek(0)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _walk_pages(data)


def _walk_pages(data: mmap.mmap) -> list[OggStream] | None:
    streams: dict[int, list[int]] = {}  # serial -> [rate, channels, pre_skip, granule]
    codecs: dict[int, str] = {}
    order: list[int] = []
    chained = False
    seen_data_page = False
    pos, end = 0, len(data)
    for _ in range(_MAX_OGG_PAGES):
        if pos + 27 > end or data[pos : pos + 4] != b"OggS":
            found = data.find(b"OggS", pos + 1) if pos < end else -1
            if found < 0:
                break
            pos = found
            continue
        header_type = data[pos + 5]
        granule, serial = struct.unpack("<qI", data[pos + 6 : pos + 18])
        n_segments = data[pos + 26]
        lacing = data[pos + 27 : pos + 27 + n_segments]
        body = pos + 27 + n_segments
        if header_type & _BOS:
            if seen_data_page:
                chained = True
            codec, rate, channels, pre_skip = _ogg_identify(bytes(data[body : body + 64]))
            streams[serial] = [rate, channels, pre_skip, 0]
            codecs[serial] = codec
            order.append(serial)
        else:
            seen_data_page = True
        if serial in streams and granule > 0:
            streams[serial][3] = granule
        pos = body + sum(lacing)
    if not chained:
        return None
    return [
        OggStream(
            serial=serial,
            codec=codecs[serial],
            sample_rate=streams[serial][0],
            channels=streams[serial][1],
            frames=max(0, streams[serial][3] - streams[serial][2]),
        )
        for serial in order
    ]
