"""When a recording started (aware UTC), from what the recorder wrote: GUANO, AudioMoth's comment, the file name.

Order of trust: a GUANO ``Timestamp`` with a UTC offset, then AudioMoth's comment
``Recorded at 20:26:15 03/09/2024 (UTC+1) by AudioMoth …`` (local time and its offset, which AudioMoth also
uses in the file name when a time zone is set), then the file name ``[PREFIX_]YYYYMMDD_HHMMSS`` read as UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge.audio.recorder_names import start_time_from_name
from edge.audio.riff import read_chunk, riff_chunks

GUANO_CHUNK = b"guan"
LIST_CHUNK = b"LIST"
AUDIOMOTH_COMMENT = re.compile(
    r"Recorded at (\d{2}):(\d{2}):(\d{2}) (\d{2})/(\d{2})/(\d{4}) \(UTC(?:([+-])(\d{1,2})(?::(\d{2}))?)?\)")


def recording_start_utc(path: Path) -> datetime | None:
    """UTC start of the recording at ``path`` (timezone-aware), or None when nothing says."""
    guano, comment = _metadata_texts(path)
    return _guano_timestamp(guano) or _audiomoth_comment(comment) or start_time_from_name(path)


def _metadata_texts(path: Path) -> tuple[str, str]:
    """(GUANO text, LIST/INFO text) of a WAV file; empty strings where absent."""
    guano = info = ""
    for chunk in riff_chunks(path):
        if chunk.chunk_id == GUANO_CHUNK:
            guano = read_chunk(path, chunk).decode("utf-8", errors="replace")
        elif chunk.chunk_id == LIST_CHUNK:
            info += read_chunk(path, chunk).decode("latin-1")
    return guano, info


def _guano_timestamp(text: str) -> datetime | None:
    """GUANO ``Timestamp`` (ISO 8601); one without a UTC offset is local time of an unknown zone: ignored."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Timestamp":
            try:
                stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                return None
            return stamp.astimezone(timezone.utc) if stamp.tzinfo is not None else None
    return None


def _audiomoth_comment(text: str) -> datetime | None:
    """AudioMoth's ``Recorded at HH:MM:SS DD/MM/YYYY (UTC±H[:MM])``: local time minus its offset."""
    match = AUDIOMOTH_COMMENT.search(text)
    if match is None:
        return None
    hour, minute, second, day, month, year = (int(g) for g in match.groups()[:6])
    sign, offset_h, offset_min = match.group(7), int(match.group(8) or 0), int(match.group(9) or 0)
    try:
        local = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    offset = timedelta(hours=offset_h, minutes=offset_min) * (-1 if sign == "-" else 1)
    return (local - offset).replace(tzinfo=timezone.utc)
