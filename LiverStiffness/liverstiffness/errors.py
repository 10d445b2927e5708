"""One exception type for bad input, so every front end can show it as one clear line.

The command line turns it into ``error: <message>`` and exit code 2; the Slicer panel shows the
message in an error box. The message always names the input (a file, a manifest row, a field)
and what is wrong with it.
"""


class InputError(ValueError):
    """Raised for input a user can fix: a missing file, a wrong dimension, an impossible value."""

    def __init__(self, what: str, problem: str):
        self.what = str(what)
        self.problem = problem
        super().__init__(f"{self.what}: {problem}")


EXIT_BAD_INPUT = 2
