"""Prometheus exporter that checks mailboxes end to end: login, send, deliver, read."""

__version__ = "0.1.0"
