"""A reference model with non-collapsed embeddings for fidelity numbers (the weights are never committed).

The full-size default ClapConfig (BioLingual's architecture) with random weights, trained briefly with a
contrastive objective on augmented windows of field recordings (``export/reference_training.py``), then
exported, calibrated, quantized and verified on recordings held out from training and calibration.

    python benchmarks/train_reference.py --workdir runs/reference --steps 40 --batch 8
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402

TRAIN_FOLDERS = ("kitzeslab__opensoundscape", "kahst__BirdNET-Analyzer", "scikit-maad__scikit-maad")
"""Training and calibration recordings; every other folder of the corpus is held out for verification."""


def main() -> None:
    from calibration.dataset import build_calibration_set
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import export_fp32_bundle
    from export.quantize import QuantizeOptions, add_precision
    from export.reference_training import TrainOptions, train_reference
    from export.synthetic import build_checkpoint
    from export.verify import verify_bundle

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "reference")
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--calibration-windows", type=int, default=256)
    args = parser.parse_args()
    args.audio = args.audio or shared_audio()
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    train = [args.audio / name for name in TRAIN_FOLDERS]
    held_out = [p for p in sorted(args.audio.iterdir()) if p.is_dir() and p.name not in TRAIN_FOLDERS]
    random_checkpoint = build_checkpoint(args.workdir / "random", args.size)
    trained = train_reference(random_checkpoint, train, args.workdir / "trained", TrainOptions(
        steps=args.steps, batch=args.batch, learning_rate=args.learning_rate, pool_windows=4 * args.batch * 4))
    checkpoint = load_checkpoint(str(trained))
    bundle = args.workdir / "bundle"
    export_fp32_bundle(checkpoint, bundle, args.audio)
    from edge.model.bundle import open_bundle
    from edge.scoring.labels import read_labels
    from export.labels import example_embeddings, store_label_set  # one label per training recording

    examples = args.workdir / "labels"
    names = []
    for number, path in enumerate(sorted(p for folder in train for p in folder.glob("*.wav"))):
        (examples / f"rec{number:02d}").mkdir(parents=True, exist_ok=True)
        link = examples / f"rec{number:02d}" / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
        names.append(f"rec{number:02d}")
    (examples / "labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    opened, labels = open_bundle(bundle), read_labels(examples / "labels.txt")
    store_label_set(opened, labels, example_embeddings(opened, labels, examples), "examples", ())
    data = build_calibration_set(train, checkpoint.frontend, args.calibration_windows, seed=0)
    add_precision(bundle, data, QuantizeOptions(precision="fp16"))
    add_precision(bundle, data, QuantizeOptions(precision="int8", target="ort"))
    add_precision(bundle, data, QuantizeOptions(precision="int8", target="trt"))
    for result in verify_bundle(bundle, held_out, str(trained)):
        f = result.fidelity
        print(f"{'PASS' if result.passed else 'FAIL'} {result.stage}: "
              + (f"centred cosine {f.mean_centred_cosine:.5f} (min {f.min_centred_cosine:.5f}), "
                 f"top-1 {f.top1_agreement}, top-5 overlap {f.top5_overlap}, max abs {f.max_abs:.2e}, "
                 f"{f.windows} windows" if f else result.note))


if __name__ == "__main__":
    main()
