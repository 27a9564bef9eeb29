"""Recorder hardware profiles (one YAML per unit type) and example label lists, shipped as package data.

Find them with ``biolingual-edge config show --unit NAME`` or :func:`edge.config.loader.profile_path`.
"""
