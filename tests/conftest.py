import os
import sys

# tests/ holds importable helper modules (fake backends) that worker processes import too
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)
