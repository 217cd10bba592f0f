"""One error type for everything a user can get wrong, so every front end (CLI, app)
shows it as a single line that names the field and the fix."""


class UserError(Exception):
    def __init__(self, field: str, problem: str, fix: str):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem} — {fix}")
