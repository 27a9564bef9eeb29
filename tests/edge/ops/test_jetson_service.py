"""The systemd unit of a Jetson (backend trt): GPU device groups, and caches outside the read-only bundle."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge.config.loader import resolve_config
from edge.model.backends.cache_dirs import STATE_DIR_ENV, trt_ep_cache_dir
from edge.model.backends.ort import TRT_EP, _with_options
from edge.model.bundle import open_bundle
from edge.ops.service import SERVICE_FILE, render_service_file
from tests.edge.ops.test_service import directives

REPO = Path(__file__).resolve().parents[3]


def profile_copy(tmp_path: Path, profile: str) -> Path:
    text = (REPO / "firmware_configs" / profile).read_text(encoding="utf-8")
    folder = tmp_path / "unit"
    (folder / "labels").mkdir(parents=True)
    shutil.copy(REPO / "firmware_configs" / "labels" / "north-america-example.txt", folder / "labels")
    path = folder / "unit.yaml"
    path.write_text(text.replace("/var/lib/biolingual-edge/logs", str(tmp_path / "logs")), encoding="utf-8")
    return path


@pytest.mark.parametrize(("profile", "groups"), [
    ("jetson-orin-nx.yaml", ["audio video render"]),
    ("jetson-orin-nano.yaml", ["audio video render"]),
    ("raspberry-pi-5.yaml", ["audio"]),
])
def test_trt_units_join_the_gpu_device_groups(tmp_path: Path, profile: str, groups: list[str]) -> None:
    path = profile_copy(tmp_path, profile)
    unit = directives(render_service_file(resolve_config(path, None, {}), path, user="recorder"))
    assert unit["SupplementaryGroups"] == groups
    assert unit["ProtectSystem"] == ["strict"] and unit["StateDirectory"] == ["biolingual-edge"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (apt-get install systemd)")
def test_jetson_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    path = profile_copy(tmp_path, "jetson-orin-nx.yaml")
    unit_file = tmp_path / SERVICE_FILE
    unit_file.write_text(render_service_file(resolve_config(path, None, {}), path, user="recorder"), encoding="utf-8")
    verify = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True,
                            check=False)
    assert verify.returncode == 0, verify.stderr
    assert SERVICE_FILE not in verify.stderr, verify.stderr


def test_tensorrt_provider_cache_lives_in_the_state_directory(tiny_bundle: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "var-lib-biolingual-edge"
    monkeypatch.setenv(STATE_DIR_ENV, str(state))
    monkeypatch.delenv("BIOLINGUAL_CACHE_DIR", raising=False)
    bundle = open_bundle(tiny_bundle)
    provider = _with_options(TRT_EP, bundle)
    assert isinstance(provider, tuple)
    options = provider[1]
    for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
        path = Path(options[key])
        assert path.is_dir() and path.is_relative_to(state) and not path.is_relative_to(tiny_bundle)
    assert trt_ep_cache_dir(bundle) == Path(options["trt_engine_cache_path"])
