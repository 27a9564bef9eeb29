"""The unit config: strict schema, loading with --set overrides, commented YAML, the listening schedule."""
