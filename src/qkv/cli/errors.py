"""The CLI's error type: a problem with the user's input, shown as one line (exit status 2)."""


class UsageError(Exception):
    pass
