"""Label strings the text-tower export is checked on: tokenizer ids and embeddings against transformers/torch.

Chosen to break tokenizers: diacritics, apostrophes, hyphens, non-Latin scripts, emoji, odd whitespace,
and names longer than the model's 77 tokens (truncated exactly where transformers truncates).
"""

from __future__ import annotations

from pathlib import Path

from edge.scoring.labels import read_labels

SHIPPED_LABELS = Path(__file__).resolve().parents[1] / "firmware_configs" / "labels" / "north-america-example.txt"
LONG_NAME = ("Greater horseshoe bat Rhinolophus ferrumequinum echolocating while foraging along a hedgerow at "
             "dusk, with a distant tawny owl, wind in the leaves, rain on the recorder housing and the constant "
             "hum of a road two kilometres to the north of the deployment site in late summer")
PARITY_TEXTS = (
    "Great Plains Toad",
    "Rhinolophus hipposideros",
    "Pérez's frog",
    "Pelophylax perezi",
    "Swainson's Thrush",
    "Golden-winged Warbler",
    "Œdicnème criard",
    "Große Hufeisennase",
    "Kızılgerdan",
    "ニホンアマガエル",
    "日本語",
    "кириллица",
    "обыкновенная чесночница",
    "Ελληνικά βάτραχος",
    "الضفدع",
    "frog chorus at night 🐸",
    "  leading and trailing spaces  ",
    "tab\tand\nnewline",
    "UPPER case NAME",
    "a",
    "the sound of a great plains toad",
    "'quoted' name's with ''double'' apostrophes",
    LONG_NAME,
    LONG_NAME + " " + LONG_NAME,
)


def parity_texts() -> tuple[str, ...]:
    """:data:`PARITY_TEXTS` plus the shipped example list's common and scientific names."""
    shipped = read_labels(SHIPPED_LABELS)
    extra = [n for pair in zip(shipped.names, shipped.scientific_names) for n in pair if n]
    return PARITY_TEXTS + tuple(n for n in extra if n not in PARITY_TEXTS)
