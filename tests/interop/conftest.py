"""pytest fixtures: the shared harness in tests/ferry_harness.py (real ferryd servers on loopback)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ferry_harness import *  # noqa: E402,F401,F403
from ferry_harness import ApiError, Server  # noqa: E402,F401
