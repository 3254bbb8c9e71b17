"""The `fastdipole` command line: one click group, one module per sub-command in `commands/`."""

from __future__ import annotations

import sys

import click

from .errors import FastDipoleError


class _FriendlyGroup(click.Group):
    """Turns our own errors (bad data, bad model input) and bad option values (a path that does not exist, a
    number that is not one) into one clean line instead of a traceback or click's usage block."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FastDipoleError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except click.BadParameter as err:
            click.echo(f"error: {' '.join(err.format_message().split())}", err=True)
            sys.exit(2)


@click.group(cls=_FriendlyGroup)
@click.version_option(package_name="fastdipole")
def main():
    """fastdipole: fast HIP-NN dipole models with an auxiliary atomic-charge loss.

    Units: positions in Angstrom, charges in e, dipoles in Debye (D) and e*Angstrom (1 e*A = 4.80320 D).
    """


def _register_commands():
    # One module per sub-command, imported here so `fastdipole --help` lists them all.
    from .commands import baseline, data, evaluate, export, predict, reproduce, train

    for module in (data, baseline, train, evaluate, predict, export, reproduce):
        main.add_command(module.command)


_register_commands()

if __name__ == "__main__":
    main()
