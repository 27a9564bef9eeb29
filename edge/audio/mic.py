"""Microphone capture through sounddevice/PortAudio: device by name, 48 kHz or native rate + soxr, ring buffer.

The callback only copies into the ring and counts PortAudio overflow flags. The reader turns ring
frames into 48 kHz mono :class:`AudioChunk` s on one integer sample timeline.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from edge.audio.alsa_plugins import release_unused_plugins
from edge.audio.chunk import AudioChunk, downmix
from edge.audio.resample import StreamResampler
from edge.audio.ring import RingBuffer
from edge.errors import AudioError

log = logging.getLogger(__name__)

BLOCK_S = 0.1
"""PortAudio callback block length in seconds."""
FIRST_AUDIO_TIMEOUT_S = 5.0
"""A stream that delivers nothing this long after opening counts as a failed open."""


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise AudioError(f"microphone support is unavailable ({e})",
                         "install PortAudio's system library: `sudo apt install libportaudio2` (Debian, Raspberry Pi "
                         "OS, JetPack), then check with `biolingual-edge devices`") from e
    return sd


@dataclass(frozen=True)
class InputDevice:
    """An input device as PortAudio reports it."""

    index: int
    name: str
    channels: int
    default_rate: float


def input_devices() -> list[InputDevice]:
    """Every device with at least one input channel."""
    sd = _sounddevice()
    return [InputDevice(i, d["name"], int(d["max_input_channels"]), float(d["default_samplerate"]))
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def supported_rates(device: InputDevice, candidates: tuple[int, ...] = (16_000, 22_050, 32_000, 44_100, 48_000,
                                                                        96_000, 192_000, 384_000)) -> list[int]:
    """Which of the common rates PortAudio accepts for this device."""
    sd = _sounddevice()
    rates = []
    for rate in candidates:
        try:
            sd.check_input_settings(device=device.index, samplerate=rate, channels=1)
        except Exception:  # PortAudio reports unsupported settings with its own exception types
            continue
        rates.append(rate)
    return rates


def find_device(name: str | None) -> InputDevice:
    """The first input device whose name contains ``name`` (case-insensitive); the default input if None."""
    devices = input_devices()
    if not devices:
        raise AudioError("no audio input devices found", "plug in the microphone and check `arecord -l`")
    if name is None:
        sd = _sounddevice()
        default = sd.default.device[0]
        return next((d for d in devices if d.index == default), devices[0])
    matches = [d for d in devices if name.casefold() in d.name.casefold()]
    if not matches:
        have = ", ".join(f"'{d.name}'" for d in devices)
        raise AudioError(f"no input device matches '{name}' (have: {have})",
                         "pass --device with part of one of those names; `biolingual-edge devices` lists them")
    return matches[0]


@dataclass
class CaptureStats:
    """Counters of everything that can lose audio; all monotonic over the process lifetime."""

    overflows: int = 0
    """PortAudio input-overflow flags seen in the callback."""
    overwritten_frames: int = 0
    """Device-rate frames lost because the analysis fell more than the ring capacity behind."""
    callbacks: int = 0


@dataclass(frozen=True)
class OpenedStream:
    """Facts about a stream when it opened."""

    device: str
    rate: int
    channels: int
    anchor_utc: datetime
    anchor_sample: int


class MicrophoneSource:
    """A capture stream that delivers 48 kHz mono chunks on a sample timeline starting at ``start_sample``."""

    def __init__(self, device_name: str | None, target_rate: int, ring_seconds: float,
                 rate: int | None = None, channel: int | None = None, channels: int = 1) -> None:
        self.device_name = device_name
        self.channels = channels
        self.target_rate = target_rate
        self.ring_seconds = ring_seconds
        self.requested_rate = rate
        self.channel = channel
        self.stats = CaptureStats()
        self._stream: Any = None
        self._ring: RingBuffer | None = None
        self._resampler: StreamResampler | None = None
        self._next_sample = 0
        self._lock = threading.Lock()

    def _choose_rate(self, device: InputDevice, channels: int) -> int:
        sd = _sounddevice()
        wanted = self.requested_rate or self.target_rate
        try:
            sd.check_input_settings(device=device.index, samplerate=wanted, channels=channels)
            return wanted
        except Exception as e:  # unsupported rate
            if self.requested_rate:
                raise AudioError(f"device '{device.name}' does not support {wanted} Hz ({e})",
                                 f"omit --rate to use its native {device.default_rate:g} Hz") from e
            return int(device.default_rate)

    def open(self, start_sample: int) -> OpenedStream:
        """Open the device; chunks start at ``start_sample`` (model-rate index)."""
        sd = _sounddevice()
        device = find_device(self.device_name)
        channels = min(max(self.channels, 1 if self.channel is None else self.channel + 1), device.channels)
        if self.channel is not None and self.channel >= device.channels:
            raise AudioError(f"channel {self.channel} requested but '{device.name}' has {device.channels}",
                             "choose a channel from 0")
        rate = self._choose_rate(device, channels)
        ring = RingBuffer(int(self.ring_seconds * rate), channels)
        first_audio: list[datetime] = []
        started = threading.Event()

        def callback(indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
            if not first_audio:
                # The block's first sample was captured `frames` samples ago: that is sample 0's UTC.
                first_audio.append(datetime.now(timezone.utc) - timedelta(seconds=frames / rate))
                started.set()
            self.stats.callbacks += 1
            if status.input_overflow:
                self.stats.overflows += 1
            ring.write(indata)

        try:
            stream = sd.InputStream(device=device.index, samplerate=rate, channels=channels, dtype="float32",
                                    blocksize=int(BLOCK_S * rate), callback=callback)
            stream.start()
        except Exception as e:  # PortAudioError and ALSA errors
            raise AudioError(f"cannot open input device '{device.name}' at {rate} Hz: {e}",
                             "check the microphone is plugged in and not used by another program") from e
        if not started.wait(FIRST_AUDIO_TIMEOUT_S):
            stream.abort()
            stream.close()
            raise AudioError(f"input device '{device.name}' opened but delivered no audio in "
                             f"{FIRST_AUDIO_TIMEOUT_S:g} s", "check the microphone cable and its power")
        with self._lock:
            self._stream, self._ring = stream, ring
            self._resampler = StreamResampler(rate, self.target_rate)
            self._next_sample = start_sample
        release_unused_plugins()  # the device scan's ALSA plugins (libavcodec …), not this stream's
        log.info("capturing from '%s' at %d Hz, %d channel(s)", device.name, rate, channels)
        return OpenedStream(device.name, rate, channels, first_audio[0], start_sample)

    def renumber(self, start_sample: int) -> None:
        """Number the stream's samples from ``start_sample`` (call right after :meth:`open`, before reading)."""
        with self._lock:
            self._next_sample = start_sample

    def available(self) -> bool:
        """Whether the device is present and accepts our settings, asked of a fresh PortAudio device list.

        PortAudio lists devices once per initialisation, so a replugged USB microphone is only seen after
        re-initialising it; call this only while no stream of ours is open.
        """
        try:
            sd = _sounddevice()
            if self._stream is None:
                sd._terminate()
                sd._initialize()
            device = find_device(self.device_name)
            channels = min(max(self.channels, 1 if self.channel is None else self.channel + 1), device.channels)
            for rate in (self.requested_rate or self.target_rate, int(device.default_rate)):
                try:
                    sd.check_input_settings(device=device.index, samplerate=rate, channels=channels)
                    return True
                except Exception:  # PortAudio reports an absent or unwilling device with its own exceptions
                    continue
        except (AudioError, OSError):
            return False
        return False

    @property
    def active(self) -> bool:
        """Whether PortAudio still reports the stream running."""
        stream = self._stream
        return bool(stream is not None and stream.active)

    def read(self, timeout: float) -> AudioChunk | None:
        """Everything captured since the last read as one 48 kHz chunk, or None if nothing arrived."""
        ring, resampler = self._ring, self._resampler
        if ring is None or resampler is None:
            return None
        got = ring.read(timeout)
        if got is None:
            return None
        if got.overwritten:
            # Lost audio: jump the timeline by its duration so later samples keep their true time.
            self.stats.overwritten_frames += got.overwritten
            self._next_sample += round(got.overwritten * self.target_rate / resampler.in_rate)
            resampler.reset()
            log.warning("analysis fell behind: %d frames overwritten in the ring", got.overwritten)
        samples = resampler.push(downmix(got.frames, self.channel))
        chunk = AudioChunk(samples, self.target_rate, self._next_sample)
        self._next_sample = chunk.end_sample
        return chunk

    def pending_seconds(self) -> float:
        """Captured audio not yet read, in seconds."""
        ring = self._ring
        stream = self._stream
        if ring is None or stream is None:
            return 0.0
        return ring.pending / float(stream.samplerate)

    def close(self) -> None:
        """Stop and close the stream (safe to call twice or after the device vanished)."""
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as e:  # the device may already be gone
                log.warning("closing the input stream: %s", e)


def record(device_name: str | None, seconds: float, rate: int, channels: int = 1) -> tuple[int, np.ndarray]:
    """A short blocking capture for site checks: (actual rate Hz, frames (N, C) float32).

    Opens at ``rate`` if the device accepts it, else at the device's native rate.
    """
    sd = _sounddevice()
    device = find_device(device_name)
    channels = min(channels, device.channels)
    try:
        sd.check_input_settings(device=device.index, samplerate=rate, channels=channels)
        actual = rate
    except Exception:  # unsupported rate: use the device's own
        actual = int(device.default_rate)
    try:
        frames = sd.rec(int(seconds * actual), samplerate=actual, channels=channels, dtype="float32",
                        device=device.index, blocking=True)
    except Exception as e:  # PortAudioError and ALSA errors
        raise AudioError(f"cannot record from '{device.name}': {e}",
                         "check the microphone is plugged in and not used by another program") from e
    return actual, frames
