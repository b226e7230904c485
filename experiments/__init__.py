"""Experiment entry points: main.py (one config), sweep.py, plot.py."""
