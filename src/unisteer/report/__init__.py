"""Fit outputs, plots, the typed results of an experiment and its report."""
