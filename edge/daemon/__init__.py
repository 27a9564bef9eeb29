"""The field daemon's lifecycle: the capture/analysis loop, exit codes, health, power, notifications."""
