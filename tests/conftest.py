"""Shared test settings: small thread counts so tests behave on 2-core CI machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
