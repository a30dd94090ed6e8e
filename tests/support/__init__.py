"""Helpers shared by the tests (and benchmarks), one module per topic; test modules import
from here, never from each other or from a conftest.py."""
