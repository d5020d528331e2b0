"""Errors the CLI shows as one line (exit 1) instead of a traceback."""


class UserError(Exception):
    """Bad input or an unmet requirement (no GPU, unwritable path): the message says what to change."""
