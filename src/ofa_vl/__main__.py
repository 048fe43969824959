"""``python -m ofa_vl`` (also under ``torchrun``) = the ``ofa`` command."""

import sys

from .cli import main

sys.exit(main())
