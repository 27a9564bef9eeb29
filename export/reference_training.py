"""Brief contrastive training of the audio tower, so fidelity is measured on non-collapsed embeddings.

Random weights map every window to nearly the same embedding, which hides quantization damage. A few
steps of SimCLR-style training (two augmented views of the same window must match each other and no
other window in the batch) spread the embeddings out. Augmentations act on the runtime log-mel features:
time shift, gain, noise and a frequency mask. Used by ``benchmarks/train_reference.py`` and the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration.select import select_windows
from edge.model.frontend import LogMelFrontend
from export.checkpoint import load_checkpoint, projected

log = logging.getLogger(__name__)

MAX_SHIFT_FRAMES = 200
"""Largest circular time shift of a view, in STFT frames (2 s at a 10 ms hop)."""
MAX_GAIN_DB = 6.0
NOISE_DB = 1.0
"""Standard deviation of the Gaussian noise added to the log-mel, in dB."""
MAX_MASKED_BANDS = 8


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 30
    batch: int = 16
    """Windows per step (each seen as two views)."""
    learning_rate: float = 1e-3
    pool_windows: int = 128
    """Distinct windows drawn from the corpus (stratified by file and loudness) to train on."""
    temperature: float = 0.1
    seed: int = 0


def _augment(torch: Any, x: Any, generator: Any) -> Any:
    """One random view of a ``(B, 1, T, M)`` log-mel batch."""
    batch, _, frames, bands = x.shape
    views = []
    for i in range(batch):
        shift = int(torch.randint(-MAX_SHIFT_FRAMES, MAX_SHIFT_FRAMES + 1, (1,), generator=generator))
        view = torch.roll(x[i], shifts=shift, dims=1)
        view = view + (torch.rand(1, generator=generator) * 2 - 1) * MAX_GAIN_DB
        view = view + torch.randn(view.shape, generator=generator) * NOISE_DB
        width = int(torch.randint(0, MAX_MASKED_BANDS + 1, (1,), generator=generator))
        low = int(torch.randint(0, bands - width + 1, (1,), generator=generator))
        view[..., low : low + width] = view.min()
        views.append(view)
    return torch.stack(views)


def _nt_xent(torch: Any, a: Any, b: Any, temperature: float) -> Any:
    """Symmetric InfoNCE between two views: row i of ``a`` must match row i of ``b``."""
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0])
    return (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2


def train_reference(checkpoint_dir: Path, audio: list[Path], out_dir: Path, options: TrainOptions) -> Path:
    """Train the audio tower of ``checkpoint_dir`` briefly on ``audio``; save the result to ``out_dir``."""
    import torch

    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    checkpoint = load_checkpoint(str(checkpoint_dir))
    params = checkpoint.frontend
    windows = select_windows(audio, params, options.pool_windows, options.seed)
    pool = torch.from_numpy(LogMelFrontend(params).batch([w.samples for w in windows]))
    model = checkpoint.model.train()
    trainable = list(model.audio_model.parameters()) + list(model.audio_projection.parameters())
    optimiser = torch.optim.AdamW(trainable, lr=options.learning_rate)
    rng = np.random.default_rng(options.seed)
    for step in range(options.steps):
        pick = torch.from_numpy(rng.choice(pool.shape[0], size=min(options.batch, pool.shape[0]), replace=False))
        batch = pool[pick]
        views = torch.cat([_augment(torch, batch, generator), _augment(torch, batch, generator)])
        embeds = projected(model.get_audio_features(input_features=views))
        loss = _nt_xent(torch, embeds[: batch.shape[0]], embeds[batch.shape[0] :], options.temperature)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        log.info("step %d/%d: contrastive loss %.3f", step + 1, options.steps, float(loss))
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    checkpoint.processor.save_pretrained(out_dir)
    return out_dir
