from .lifecycle import die_with_parent

die_with_parent()

from .cli import app  # noqa: E402  (after the parent-death signal is armed)

app()
