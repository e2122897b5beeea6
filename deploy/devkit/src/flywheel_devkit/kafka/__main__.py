"""``python -m flywheel_devkit.kafka``: see :mod:`flywheel_devkit.kafka.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
