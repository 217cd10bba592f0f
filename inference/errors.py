"""One error type for what a user can get wrong while loading or chatting, shown as a
single line naming the field and the fix (same shape as merging.MergeError; the two
packages stay independent)."""


class InferenceError(Exception):
    def __init__(self, field: str, problem: str, fix: str):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem} — {fix}")
