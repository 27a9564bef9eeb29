"""The exporter's third-party chatter is held for one call only; errors still come through."""

from __future__ import annotations

import logging
import warnings

import pytest

from export.quiet import quiet_third_party


def test_chatter_is_held_inside_and_restored_after(capsys: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    fusion = logging.getLogger("fusion_skiplayernorm")
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    before = fusion.level, registration.level
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as seen:
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
    assert capsys.readouterr().out == "after\n"
    messages = [r.getMessage() for r in caplog.records]
    assert "a real export error" in messages and "after too" in messages
    assert not any("torchvision" in m or "symbolic shape" in m for m in messages)
    assert not seen
    assert (fusion.level, registration.level) == before
