"""Options shared by several commands, declared once."""

from __future__ import annotations

import click

from ..device import DEVICES
from ..ops import BACKENDS
from ..train.run_folder import RunFolderError

backend_option = click.option(
    "--backend", type=click.Choice(list(BACKENDS)), default="auto", show_default=True,
    help="compiled: fastdipole's C++/CUDA kernels; reference: the pure-PyTorch reference ops; auto: compiled when "
         "built")

device_option = click.option("--device", type=click.Choice(list(DEVICES)), default="auto", show_default=True,
                             help="cpu, cuda, or auto (the GPU when torch sees one)")


class RunFolder(click.ParamType):
    """A run folder written by `fastdipole train`, or the name of a model shipped with the package (``qm9``)."""

    name = "RUN|qm9"

    def convert(self, value, param, ctx):
        from ..pretrained import PRETRAINED, resolve_model

        path = resolve_model(value)
        if not path.is_dir():  # a one-line error, like every other bad input (not click's usage block)
            raise RunFolderError(f"{value}: no such run folder (and not a shipped model: {', '.join(PRETRAINED)})")
        return path


def model_option(required: bool = True, default=None):
    return click.option("--model", "run_dir", type=RunFolder(), required=required, default=default,
                        show_default=default is not None,
                        help="run folder written by `fastdipole train`, or `qm9` for the model shipped with the "
                             "package")
