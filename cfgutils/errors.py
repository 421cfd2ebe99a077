"""The one exception family for bad user input; the CLI turns it into a one-line error and exit code 2."""


class UserInputError(ValueError):
    """Bad input from a user (a flag, a file, a checkpoint): reported in one line, nothing written."""
