"""Sub-commands of the `fastdipole` CLI; each module exposes one click object named `command`."""
