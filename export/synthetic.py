"""Random-weight BioLingual-shaped checkpoints for tests and benchmarks (no weights can be downloaded).

``tiny``: small hidden sizes, same HTS-AT/RoBERTa classes, seconds to build and export (one block per stage).
``swin``: narrower still but two blocks per stage, so the shifted-window blocks are exported too.
``full``: the default ``ClapConfig`` (the BioLingual architecture) for speed and memory figures.
The tokenizer is a byte-level BPE trained on the spot; the feature extractor carries BioLingual's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.errors import ExportError

TINY_TEXT = {"vocab_size": 512, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 80}
TINY_AUDIO = {"patch_embeds_hidden_size": 16, "hidden_size": 128, "depths": [1, 1, 1, 1],
              "num_attention_heads": [1, 1, 2, 2]}
SWIN_AUDIO = {"patch_embeds_hidden_size": 8, "hidden_size": 64, "depths": [2, 2, 2, 2],
              "num_attention_heads": [1, 1, 1, 1]}
"""Narrowest HTS-AT with two blocks per stage, so shifted windows (attention masks, rolls) are in the graph."""
AUDIO_CONFIGS = {"tiny": TINY_AUDIO, "swin": SWIN_AUDIO}
SIZES = (*AUDIO_CONFIGS, "full")
TINY_PROJECTION = 32
BIOLINGUAL_EXTRACTOR = {"feature_size": 64, "sampling_rate": 48_000, "hop_length": 480, "max_length_s": 10,
                        "fft_window_size": 1024, "frequency_min": 50, "frequency_max": 14_000,
                        "truncation": "rand_trunc", "padding": "repeatpad"}
TOKENIZER_CORPUS = (
    "the sound of a great plains toad trill frog calling at night",
    "eurasian magpie pica pica chatter bird song dawn chorus",
    "ruffed grouse drumming wing beats in the forest",
    "golden winged warbler song swainson's thrush flight call",
    "european storm petrel purr song from a burrow",
    "bat echolocation whiskered bat greater horseshoe bat pipistrelle",
    "background noise wind rain human speech no animal silence",
)
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_tokenizer(vocab_size: int) -> Any:
    """A RoBERTa-style byte-level BPE tokenizer trained on :data:`TOKENIZER_CORPUS`."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(TOKENIZER_CORPUS) * 4, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=SPECIAL_TOKENS)
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return RobertaTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                model_max_length=77)


def build_checkpoint(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight ``ClapModel`` + ``ClapProcessor`` to ``out_dir`` with ``save_pretrained``."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    if size not in SIZES:
        raise ExportError(f"unknown checkpoint size '{size}'", f"use --size {', '.join(SIZES)}")
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(TINY_TEXT["vocab_size"])
    if size in AUDIO_CONFIGS:
        config = ClapConfig(text_config={**TINY_TEXT, "vocab_size": len(tokenizer),
                                         "projection_dim": TINY_PROJECTION},
                            audio_config={**AUDIO_CONFIGS[size], "projection_dim": TINY_PROJECTION},
                            projection_dim=TINY_PROJECTION)
    else:
        config = ClapConfig(text_config={"vocab_size": max(len(tokenizer), 50265)})
    model = ClapModel(config).eval()
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(**BIOLINGUAL_EXTRACTOR), tokenizer=tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
