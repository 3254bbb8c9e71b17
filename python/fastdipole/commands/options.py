"""Options shared by several commands, declared once."""

from __future__ import annotations

import click

from ..device import DEVICES
from ..ops import BACKENDS

backend_option = click.option(
    "--backend", type=click.Choice(list(BACKENDS)), default="auto", show_default=True,
    help="compiled: fastdipole's C++/CUDA kernels; reference: the pure-PyTorch reference ops; auto: compiled when "
         "built")

device_option = click.option("--device", type=click.Choice(list(DEVICES)), default="auto", show_default=True,
                             help="cpu, cuda, or auto (the GPU when torch sees one)")
