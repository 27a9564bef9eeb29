"""The season archive of window embeddings: store, scan kernels, prefilter, search, rescore."""
