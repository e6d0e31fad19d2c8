"""Conversion rules, pure (no I/O): compile the mapping, read record values, build the event,
normalize and hash user data against the API's field tables, measure match quality."""
