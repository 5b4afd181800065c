"""Experiment grids (grid.py), their statistics (stats.py) and report (report.py)."""
