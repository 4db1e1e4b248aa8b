"""`python3 -m bouheki.ctl`: the same as the bouhekictl console script."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
