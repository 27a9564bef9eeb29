"""Label files and label sets, the scorer, trained heads, per-label thresholds, the torch-free text tower."""
