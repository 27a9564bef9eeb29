"""``logs collect`` of window embeddings: every segment under a card's ``embeddings/`` into the archive.

The card's segment format is read here; the archive is written only through its one door,
:class:`desk.archive.windows.WindowStore` (which skips windows and segments it already holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from desk.archive.windows import WindowBatch, WindowShapeError, WindowStore, normalised
from desk.collect.cards import Finding
from edge.card.cardformat import CLOCK_SYNC_STATES, OPEN_SUFFIX, TEMP_PREFIX
from edge.card.embedformat import EMBEDDINGS_DIR, EXTENSION, EmbeddingSegment, dequantise, read_embedding_segment


@dataclass(frozen=True)
class ArchiveCounts:
    read: int
    added: int
    findings: list[Finding]


def archive_card(store: WindowStore, card: Path, skipped_boots: frozenset[str] = frozenset()) -> ArchiveCounts:
    """Archive every embedding segment under ``card/embeddings/`` (sealed and ``.part``), except those of
    ``skipped_boots`` (boots of a newer schema, skipped whole)."""
    folder = card / EMBEDDINGS_DIR
    paths = sorted(p for p in folder.glob(f"*.{EXTENSION}*")
                   if p.name.endswith((f".{EXTENSION}", f".{EXTENSION}{OPEN_SUFFIX}"))
                   and not p.name.startswith(TEMP_PREFIX))
    read = added = 0
    findings: list[Finding] = []
    for path in paths:
        segment = read_embedding_segment(path)
        findings += [Finding("info", "embeddings", n, str(card)) for n in segment.notes]
        findings += [Finding("warning", "embeddings", p, str(card)) for p in segment.problems]
        if segment.header is None or not len(segment.records) or segment.header.boot_id in skipped_boots:
            continue
        read += len(segment.records)
        try:
            added += store.insert(window_batch(segment, path.name.removesuffix(OPEN_SUFFIX), str(card)))
        except WindowShapeError as e:  # this segment only: the card's other segments and cards are still taken
            findings.append(Finding("error", "embeddings", f"{e.message} ({e.hint})", str(card)))
    return ArchiveCounts(read, added, findings)


def window_batch(segment: EmbeddingSegment, name: str, card: str) -> WindowBatch:
    """A card segment's records as the archive takes them: unit-length float16 vectors."""
    header, records = segment.header, segment.records
    assert header is not None
    # fp16: the model's unit vectors exactly as the unit stored them; int8: dequantised and renormalised
    vectors = records["vector"] if header.dtype == "fp16" else normalised(dequantise(records)).astype(np.float16)
    return WindowBatch(
        segment=name, unit_id=header.unit_id, deployment_id=header.deployment_id, boot_id=header.boot_id,
        sample_rate=header.sample_rate, model_sha256=header.model_sha256, source_path=header.source_path, card=card,
        stream=records["stream"], start_sample=records["start_sample"], end_sample=records["end_sample"],
        start_utc_us=records["start_utc_us"], clock_sync=[CLOCK_SYNC_STATES[c] for c in records["clock_sync"]],
        vectors=vectors, embedding_space=header.embedding_space)
