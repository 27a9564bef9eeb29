"""Operating a unit: the on-site check, the deployment plan, the systemd service, setting a daemon up, bench."""
