"""Third-party chatter a newcomer cannot act on, silenced for one call only (no global filters).

The dynamo exporter logs that torchvision is missing (we export no torchvision operators) and warns about
pytree internals; ONNX Runtime's transformer optimizer prints "failed in shape inference" and logs that
symbolic shape inference is off, then fuses without it. None of it changes the bundle, whose parity gates
judge the result. Errors still come through: only records below ERROR and these warning categories are held.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

CHATTY_LOGGERS = ("torch.onnx._internal.exporter._registration", "onnxruntime.transformers")
"""Loggers lowered to ERROR for the call; plus every ``fusion_*``/``onnx_model*`` module logger of the optimizer."""
OPTIMIZER_LOGGER_PREFIXES = ("fusion_", "onnx_model", "optimizer", "shape_infer", "symbolic_shape_infer")


def _chatty() -> list[logging.Logger]:
    names = set(CHATTY_LOGGERS) | {name for name in logging.root.manager.loggerDict
                                   if name.startswith(OPTIMIZER_LOGGER_PREFIXES)}
    return [logging.getLogger(name) for name in sorted(names)]


@contextlib.contextmanager
def quiet_third_party(stdout: bool = False) -> Iterator[None]:
    """Hold the chatter above for the ``with`` block; ``stdout`` also swallows bare ``print`` calls."""
    loggers = _chatty()
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.|copyreg")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.|onnxscript")
            with contextlib.redirect_stdout(io.StringIO()) if stdout else contextlib.nullcontext():
                yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
