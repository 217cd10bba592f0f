"""One error type for everything a user can get wrong, so every front end (CLI, app)
can show it as a single line that names the field and the fix."""


class MergeError(Exception):
    def __init__(self, field: str, problem: str, fix: str):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem} — {fix}")


class MergeCancelled(MergeError):
    def __init__(self) -> None:
        super().__init__("merge", "cancelled by the user", "nothing was written; run it again")
