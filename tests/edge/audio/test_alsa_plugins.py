"""PortAudio's device scan loads every ALSA plugin the machine's configuration names (libavcodec through the
a52 plugin on this rig); once our stream is open only its own plugin stays loaded, and audio keeps flowing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO, SINK

SCRIPT = """
import json, time
from edge.audio.mic import MicrophoneSource

def plugins():
    with open('/proc/self/maps') as maps:
        return sorted({line.split()[-1].rsplit('/', 1)[1] for line in maps if 'libasound_module_pcm_' in line})

def capture(source, frames_wanted):
    got, deadline = 0, time.monotonic() + 20
    while got < frames_wanted and time.monotonic() < deadline:
        chunk = source.read(1.0)
        got += 0 if chunk is None else len(chunk.samples)
    return got

import sounddevice  # noqa: F401  (initialising PortAudio scans every ALSA device)
scanned = plugins()
source = MicrophoneSource('pulse', 48000, 5.0)
source.open(0)
report = {'scanned': scanned, 'open': plugins(), 'frames': capture(source, 48000)}
source.close()
source.open(0)  # a second open reads the freed configuration again
report.update(reopened=plugins(), frames_again=capture(source, 48000))
source.close()
print(json.dumps(report))
"""


def test_an_open_stream_keeps_only_its_own_alsa_plugin_loaded(pulse: None) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PULSE_SOURCE": f"{SINK}.monitor"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "libasound_module_pcm_pulse.so" in report["scanned"]
    assert report["open"] == ["libasound_module_pcm_pulse.so"], report
    assert report["reopened"] == ["libasound_module_pcm_pulse.so"], report
    assert report["frames"] >= 48_000 and report["frames_again"] >= 48_000, report
