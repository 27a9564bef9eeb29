"""Bundle writes survive a power cut (the forgetful FUSE card of ``tests.powercut``): after a cut at a random
moment of ``labels add`` (label set + manifest), the bundle opens and verifies, holding the old or the new label
set, never an empty or torn ``manifest.json``; and a write that returned is there after the cut (durable)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from edge import durable
from edge.errors import BundleError
from edge.model.bundle import Bundle, FrontendParams, Manifest, open_bundle, write_manifest
from edge.scoring.label_sets import store_label_set
from edge.scoring.labels import LabelList
from tests.powercut.harness import FSYNC_KINDS, PowerSwitch, power_switch, switch_fsync_off

if not os.path.exists("/dev/fuse"):
    pytest.skip("no /dev/fuse on this machine", allow_module_level=True)

CUTS = 100
DIM = 8


def fresh_bundle(root: Path) -> Bundle:
    root.mkdir(parents=True)
    manifest = write_manifest(root, Manifest(model_id="ckpt", model_revision="sha256:0", embedding_dim=DIM,
                                             logit_scale=10.0,
                                             frontend=FrontendParams(48_000, 1024, 480, 64, 50.0, 14_000.0, 10)))
    durable.fsync_path(root.parent)  # the bundle folder itself was made long before (it is not what is tested)
    return Bundle(root, manifest)


def add_labels(bundle: Bundle, number: int) -> None:
    """``labels add`` of one more list: ``labels/<key>.npz`` and the manifest that lists it."""
    labels = LabelList((f"species {number}",), ("",))
    store_label_set(bundle, labels, np.full((1, DIM), number, np.float32), "text", ("{common}",))


def cut_campaign(switch: PowerSwitch, cuts: int, seed: int, fsync_off: str | None = None) -> list[str]:
    """``fsync_off``: ``labels add`` runs with that kind of fsync removed (the fresh bundle before it still has it)."""
    rng = random.Random(seed)
    calibration = fresh_bundle(switch.mountpoint / "calibration")
    switch.arm(1 << 30, "lazy", 0)
    add_labels(calibration, 0)
    operations = switch.operations()
    problems = []
    for cut in range(cuts):
        root = switch.mountpoint / f"bundle{cut}"
        bundle = fresh_bundle(root)
        before = set(bundle.manifest.label_sets)
        mode = "torn" if rng.random() < 0.3 else "lazy"
        switch.arm(rng.randint(1, operations + 2), mode, rng.randrange(1 << 30))
        returned = True
        try:
            with pytest.MonkeyPatch.context() as patch:
                if fsync_off:
                    switch_fsync_off(fsync_off, patch.setattr)
                add_labels(bundle, cut)
        except OSError:
            returned = False
        if not switch.is_off():
            switch.cut(mode, rng.randrange(1 << 30))
        switch.revive()
        try:
            after = set(open_bundle(root).manifest.label_sets)
        except BundleError as e:
            problems.append(f"cut {cut} ({mode}): the bundle no longer opens: {e.message}")
            continue
        if returned and after == before:
            problems.append(f"cut {cut} ({mode}): labels add returned, but its label set is gone after the cut")
    return problems


def test_bundle_writes_are_atomic_and_durable_across_power_cuts(tmp_path: Path) -> None:
    with power_switch(tmp_path / "mnt") as switch:
        problems = cut_campaign(switch, CUTS, seed=21)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", FSYNC_KINDS)
def test_the_campaign_fails_when_an_fsync_is_removed(tmp_path: Path, kind: str) -> None:
    with power_switch(tmp_path / "mnt") as switch:
        problems = cut_campaign(switch, CUTS, seed=21, fsync_off=kind)
    assert problems
