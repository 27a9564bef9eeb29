"""The Raspberry Pi profiles run the INT8 daemon in low-memory mode by default (peak RSS under 200 MB,
benchmarks/daemon_memory.py); boards with more memory keep the faster default."""

from __future__ import annotations

import pytest

from edge.config.loader import resolve_config


@pytest.mark.parametrize("profile", ["raspberry-pi-4", "raspberry-pi-5"])
def test_pi_profiles_default_to_low_memory_on_the_cpu(profile: str) -> None:
    model = resolve_config(None, profile).model
    assert model.backend == "ort" and model.low_memory is True


def test_low_memory_can_be_turned_off_per_unit() -> None:
    assert resolve_config(None, "raspberry-pi-5", {"model.low_memory": False}).model.low_memory is False


def test_the_orin_nano_profile_keeps_low_memory_for_when_it_runs_onnx_runtime() -> None:
    """TensorRT ignores it; a unit switched to ``backend: ort`` (no engine) stays under 200 MB."""
    model = resolve_config(None, "jetson-orin-nano", {"model.backend": "ort"}).model
    assert model.low_memory is True
    assert resolve_config(None, "jetson-orin-nano").model.backend == "trt"
