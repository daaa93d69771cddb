"""The one exception type for mistakes a user can fix."""


class AutoraysearchError(Exception):
    """A user-facing problem: its message is one sentence saying what is wrong and how to fix it."""
