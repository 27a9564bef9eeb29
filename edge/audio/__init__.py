"""Audio sources (files, microphone), resampling to the model rate, and self-describing chunks."""
