"""Which embedding space a desk command works in: one space of the archive, checked against the bundle.

Windows record their space (:mod:`edge.model.space`); windows archived before spaces were named record only
the sha256 of the model file the unit ran, and are mapped to the bundle's space when that file is one of its
audio encoders (any precision). An archive holding windows of several spaces is worked on one space at a time,
chosen with ``--space ID`` (a unique prefix); nothing is ever dropped by a silent filter.
"""

from __future__ import annotations

from dataclasses import dataclass

from desk.archive.windows import WindowFilter, WindowStore, require_windows
from desk.collect.database import CollectError
from edge.model.bundle import Bundle
from edge.model.space import check_space, embedding_space, short_space, space_of_model


@dataclass(frozen=True)
class SpaceChoice:
    """The space a command works in and the windows that are in it."""

    space: str
    where: WindowFilter
    """Matches exactly the windows of :attr:`space` (their recorded keys; no filter when the archive holds no
    other space)."""
    windows: int
    other: int
    """Archived windows of other spaces, left alone by the explicit choice."""


def archive_spaces(store: WindowStore, bundle: Bundle) -> dict[str, tuple[str, ...]]:
    """Space -> the recorded keys of its windows (a space, or the model sha of a window from before spaces)."""
    found: dict[str, list[str]] = {}
    for key in store.spaces():
        found.setdefault(space_of_model(bundle, key) or key, []).append(key)
    return {space: tuple(keys) for space, keys in found.items()}


def choose_space(store: WindowStore, bundle: Bundle, chosen: str | None = None,
                 what: str = "the archived windows") -> SpaceChoice:
    """The one space of the archive to work in (``chosen``: a prefix of it), which must be the bundle's.

    Raises a one-line error when the archive is empty, when it holds several spaces and none was chosen, when
    ``chosen`` matches none (or several), and when the space is not the bundle's.
    """
    total = require_windows(store)
    counts = store.spaces()
    spaces = archive_spaces(store, bundle)
    sizes = {space: sum(counts[k] for k in keys) for space, keys in spaces.items()}
    listing = ", ".join(f"{short_space(s)} ({n} windows)" for s, n in sorted(sizes.items(), key=lambda i: -i[1]))
    if chosen is not None:
        matches = [s for s in spaces if s.startswith(chosen.lower())] if chosen else []
        if len(matches) != 1:
            raise CollectError(f"--space {chosen!r} matches {len(matches)} of the archive's embedding spaces: "
                               f"{listing}", "pass a unique prefix of one of them")
        space = matches[0]
    elif len(spaces) > 1:
        raise CollectError(f"the archive holds windows of {len(spaces)} embedding spaces: {listing}",
                           f"work on one at a time: add --space {short_space(embedding_space(bundle))} (this "
                           "bundle's) or pass the bundle of another space")
    else:
        space = next(iter(spaces))
    check_space(f"{what} ({sizes[space]} of {total})" if len(spaces) > 1 else what, space, bundle,
                "pass the bundle the units ran (the export their windows came from)"
                + (f", or pick its space with --space ({listing})" if len(spaces) > 1 else ""))
    other = total - sizes[space]
    # every window in the space: no filter (testing each window's space key is a string op per row of every scan)
    return SpaceChoice(space, WindowFilter(spaces=spaces[space]) if other else WindowFilter(), sizes[space], other)
