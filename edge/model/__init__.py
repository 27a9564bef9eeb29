"""The model: the bundle (manifest, checksums), the log-mel frontend, and the backends that embed windows."""
