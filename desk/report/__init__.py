"""``logs report``: one self-contained, offline HTML page of a collected season (effort, detections, health)."""
