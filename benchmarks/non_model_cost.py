"""CPU time of `analyze`'s non-model steps per window: decode + resample + windowing, and the log-mel.

The same pieces `analyze` cuts (``plan_pieces``, ``piece_batches``) and the same streaming log-mel, over the
benchmark's recordings, without the model. ``--repo`` runs another checkout's code (an older commit) in the
same way, so two versions can be timed alternately in one sitting on a shared machine:

    python benchmarks/non_model_cost.py --bundle /tmp/speed/bundle [--repo /path/to/old/checkout] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="any bundle (its frontend parameters)")
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose edge/ is timed")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the recordings; the best is kept")
    parser.add_argument("--piece-seconds", type=float, default=300.0)
    args = parser.parse_args()
    args.audio = args.audio or shared_audio()
    sys.path.insert(0, str(args.repo))

    from edge.audio.files import find_audio_files
    from edge.batch.pieces import WindowGrid, piece_batches, plan_pieces
    from edge.model.bundle import open_bundle
    from edge.model.frontend_stream import StreamingLogMel

    params = open_bundle(args.bundle, verify=False).manifest.frontend
    rate = params.sampling_rate
    grid = WindowGrid(params.window_samples, params.window_samples // 2, 1)
    pieces = plan_pieces(find_audio_files([args.audio]), rate, grid, round(args.piece_seconds * rate))
    frontend = StreamingLogMel(params)
    best = {"decode": float("inf"), "log-mel": float("inf")}
    windows = 0
    for _ in range(args.rounds):
        decode = logmel = 0.0
        windows = 0
        for piece in pieces:
            frontend.reset()
            batches = piece_batches(piece, rate, grid)
            while True:
                t0 = time.process_time()
                batch = next(batches, None)
                t1 = time.process_time()
                decode += t1 - t0
                if batch is None:
                    break
                frontend.batch(batch)
                logmel += time.process_time() - t1
                windows += len(batch)
        best = {"decode": min(best["decode"], decode), "log-mel": min(best["log-mel"], logmel)}
    per_window = {k: 1e3 * v / windows for k, v in best.items()}
    print(f"{args.repo}: {windows} windows, CPU ms/window (best of {args.rounds}): decode + resample + windowing "
          f"{per_window['decode']:.2f}, log-mel {per_window['log-mel']:.2f}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
