"""`python -m fastdipole ...` is the `fastdipole` command."""

from .cli import main

main(prog_name="fastdipole")
