"""Kafka → Pinterest Conversions API consumer."""

__version__ = "0.1.0"
