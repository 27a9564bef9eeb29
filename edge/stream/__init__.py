"""What flows per window: embeddings scored, detector events, clip audio held back for them."""
