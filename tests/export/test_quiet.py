"""The exporter's third-party chatter is held for one call only; errors still come through."""

from __future__ import annotations

import logging
import warnings

import pytest

from export.quiet import quiet_third_party


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_chatter_is_held_inside_and_restored_after(capsys: pytest.CaptureFixture[str]) -> None:
    fusion = logging.getLogger("fusion_skiplayernorm")
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")  # torch may stop propagation
    before = fusion.level, registration.level
    kept = Kept()
    fusion.addHandler(kept)
    registration.addHandler(kept)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_third_party(stdout=True):
            print("failed in shape inference <class 'TypeError'>")
            fusion.warning("symbolic shape inference disabled or failed.")
            registration.warning("torchvision is not installed. Skipping torchvision::nms")
            registration.error("a real export error")
            warnings.warn_explicit("isinstance(treespec, LeafSpec) is deprecated", FutureWarning, "x.py", 1,
                                   module="torch.utils._pytree")
        print("after")
        fusion.warning("after too")
    fusion.removeHandler(kept)
    registration.removeHandler(kept)
    assert capsys.readouterr().out == "after\n"
    messages = kept.messages
    assert "a real export error" in messages and "after too" in messages
    assert not any("torchvision" in m or "symbolic shape" in m for m in messages)
    assert not seen
    assert (fusion.level, registration.level) == before
