"""``python -m ofa_vl.train`` (what torchrun starts): ``ofa train``."""

from . import main

raise SystemExit(main())
