"""Where detections go: analysis tables, the SD-card log, health records, clips."""
