"""Multi-turn agent experiments (run.py) and their builder (build.py)."""
