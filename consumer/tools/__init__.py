"""Operator tools: the command line, sandbox, status, transform and progress. They import the
runtime; nothing in the runtime imports them."""
