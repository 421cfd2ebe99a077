"""``python -m cfgutils COMMAND ...`` (also under ``torchrun --nproc_per_node N -m cfgutils ...``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
