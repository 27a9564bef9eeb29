"""The season archive of window embeddings: store, shard format, scan kernels, index, search, rescore."""
