"""One error type for everything a user can get wrong, so every front end (CLI, app)
shows it as a single line that names the field and the fix."""


ESCAPED = {code: ascii(chr(code))[1:-1] for code in [*range(32), 127, 0x2028, 0x2029, 0x85]}


class UserError(Exception):
    def __init__(self, field: str, problem: str, fix: str):
        # One line whatever a stranger's file named things: control characters are escaped.
        field, problem, fix = (part.translate(ESCAPED) for part in (field, problem, fix))
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem} — {fix}")

    def __reduce__(self):
        """Pickles as its class and three parts (a ZeroGPU worker sends it back through a
        queue): the default would call the class with the one-line message, which fails."""
        return _restore, (type(self), self.field, self.problem, self.fix)


def _restore(cls: type[UserError], field: str, problem: str, fix: str) -> UserError:
    error = cls.__new__(cls)  # a subclass's own __init__ (MergeCancelled's takes nothing) is not called
    UserError.__init__(error, field, problem, fix)
    return error


def first_line(exc: BaseException) -> str:
    """An exception a library raised, as a short clause for a one-line message."""
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:160]}" if text else exc.__class__.__name__
