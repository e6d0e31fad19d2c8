"""Telemetry (every span and metric name, defined once), the health server and JSON logs."""
