"""Power settings that act on the unit at start; what happened goes into the boot record."""

from __future__ import annotations

import logging
import shutil
import subprocess

from edge.config.schema import PowerSection

log = logging.getLogger(__name__)

JETSON_CLOCKS = "jetson_clocks"
JETSON_CLOCKS_TIMEOUT_S = 30.0


def apply_power(power: PowerSection) -> dict[str, str]:
    """Run ``jetson_clocks`` when ``power.jetson_clocks`` is set; returns the outcome for the boot record."""
    if not power.jetson_clocks:
        return {"jetson_clocks": "off"}
    tool = shutil.which(JETSON_CLOCKS)
    if tool is None:
        log.warning("power.jetson_clocks is set but %s is not installed (not a Jetson?)", JETSON_CLOCKS)
        return {"jetson_clocks": "not found"}
    try:
        done = subprocess.run([tool], capture_output=True, text=True, timeout=JETSON_CLOCKS_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("%s failed: %s", JETSON_CLOCKS, e)
        return {"jetson_clocks": f"failed: {e}"}
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        log.warning("%s failed: %s", JETSON_CLOCKS, reason[0])
        return {"jetson_clocks": f"failed: {reason[0]}"}
    return {"jetson_clocks": "applied"}
