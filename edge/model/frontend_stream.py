"""Log-mel for overlapping windows of one stream, computing each STFT frame once.

Frame ``k`` of a window starting at sample ``s`` covers stream samples ``s + k·hop_length - n_fft/2`` onwards.
Frames that lie wholly inside the window (the "interior") are the same stream frames in every window on
the same ``hop_length`` grid, so when the next window starts ``shift·hop_length`` samples later its interior
frames ``k`` equal the previous window's frames ``k + shift``. Only the frames new to the stream and the
few frames at each window edge, which see the window's own reflect padding, are recomputed.
"""

from __future__ import annotations

import numpy as np

from edge.audio.windowing import Window
from edge.model.bundle import FrontendParams
from edge.model.frontend import LogMelFrontend


class StreamingLogMel:
    """Windows of one stream, in order -> log-mel ``(n_frames, n_mels)`` equal to :class:`LogMelFrontend`'s.

    Any window may come: one that does not continue the previous window on the frame grid (first window,
    a gap, a short clip, the end-aligned tail window, a new stream) is computed in full. Call
    :meth:`reset` at a new stream so sample indices from two streams are never mixed.
    """

    def __init__(self, params: FrontendParams, highpass_hz: float = 0.0) -> None:
        self.params = params
        self.frontend = LogMelFrontend(params, highpass_hz=highpass_hz)
        half = params.n_fft // 2
        self._first_interior = -(-half // params.hop_length)
        self._last_interior = (params.window_samples + half - params.n_fft) // params.hop_length
        self._previous = np.empty((params.n_frames, params.n_mels), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the previous window (start of a new stream)."""
        self._previous_start: int | None = None
        self.frames_computed = 0
        """Frames run through the FFT since the last reset (for benchmarks and tests)."""

    def _reusable_shift(self, window: Window) -> int | None:
        """Frames the grid moved since the previous window, when its interior frames can be reused."""
        if self._previous_start is None or window.samples.shape[0] != self.params.window_samples:
            return None
        moved = window.start_sample - self._previous_start
        if moved <= 0 or moved % self.params.hop_length:
            return None
        shift = moved // self.params.hop_length
        return shift if self._first_interior + shift <= self._last_interior else None

    def __call__(self, window: Window, out: np.ndarray | None = None) -> np.ndarray:
        """Log-mel of ``window`` (the next window of the stream) -> ``(n_frames, n_mels)`` float32."""
        p = self.params
        if out is None:
            out = np.empty((p.n_frames, p.n_mels), dtype=np.float32)
        frames = self.frontend.padded_frames(window.samples)
        shift = self._reusable_shift(window)
        if shift is None:
            self.frontend.log_mel_frames(frames, out)
            self.frames_computed += p.n_frames
        else:
            first, reuse_end = self._first_interior, self._last_interior - shift + 1
            out[first:reuse_end] = self._previous[first + shift : self._last_interior + 1]
            self.frontend.log_mel_frames(frames[:first], out[:first])
            self.frontend.log_mel_frames(frames[reuse_end:], out[reuse_end:])
            self.frames_computed += first + p.n_frames - reuse_end
        if window.samples.shape[0] == p.window_samples:
            self._previous[:] = out
            self._previous_start = window.start_sample
        else:
            self._previous_start = None
        return out

    def batch(self, windows: list[Window]) -> np.ndarray:
        """Consecutive windows of the stream -> model input ``(B, 1, n_frames, n_mels)`` float32."""
        out = np.empty((len(windows), 1, self.params.n_frames, self.params.n_mels), dtype=np.float32)
        for i, window in enumerate(windows):
            self(window, out[i, 0])
        return out
