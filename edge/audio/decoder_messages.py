"""What C decoders print, named: libmpg123 (inside libsndfile) writes ``[src/libmpg123/layer3.c:…] error:
dequantization failed!`` straight to file descriptor 2 without saying which file. Around each decode call of a
compressed file we hold fd 2, then log one warning per file naming it and the messages (with counts); anything
else written meanwhile is passed on unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

COMPRESSED_SUFFIXES = frozenset({".mp3", ".ogg", ".oga", ".opus"})
DECODER_LINE = re.compile(r"^\[src/(?P<lib>lib\w+)/[^\]]*\]\s*(?:error:\s*)?(?P<message>.*?)\s*$")


class DecoderMessages:
    """Decoder lines caught while reading one file, reported once by :meth:`report`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self.active = path.suffix.lower() in COMPRESSED_SUFFIXES

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Catch fd 2 for the ``with`` block (compressed files only; WAV/FLAC decoders do not print)."""
        if not self.active:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                self._sort(caught.read().decode("utf-8", "replace"))

    def _sort(self, text: str) -> None:
        passed = []
        for line in text.splitlines(keepends=True):
            match = DECODER_LINE.match(line)
            if match:
                self.counts[f"{match['lib']}: {match['message']}"] += 1
            else:
                passed.append(line)
        if passed:
            os.write(2, "".join(passed).encode())

    def report(self) -> None:
        """One warning naming the file, if its decoder complained."""
        if self.counts:
            said = "; ".join(f"{m}" + (f" ({n}×)" if n > 1 else "") for m, n in self.counts.most_common())
            log.warning("%s: the decoder reported damaged frames (%s); the audio there may be damaged", self.path, said)
            self.counts.clear()
