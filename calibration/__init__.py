"""INT8 calibration data: representative windows of field recordings as runtime log-mel features."""
