"""Errors a user can cause: the CLI prints their message as one line and exits with their code."""


class UserError(Exception):
    """A problem with the user's input (a flag, a file, a folder) that they can fix.

    The message names the file or flag and says what to do; `exit_code` is what the CLI returns.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
