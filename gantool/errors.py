"""User-facing errors. The CLI prints them as one line and exits with status 2."""


class GantoolError(Exception):
    """A problem the user can fix (bad recipe, missing data, unknown name): exit status 2."""

    exit_code = 2


class ParamError(GantoolError):
    """A component rejected one of its parameters; the recipe loader adds file and table."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class RunFailed(Exception):
    """Training started but could not finish (exit status 1)."""

    exit_code = 1
