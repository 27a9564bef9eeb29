"""On-device runtime for BioLingual zero-shot classification. Never imports torch or transformers."""

__version__ = "0.1.0"
