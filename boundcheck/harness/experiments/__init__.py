"""Experiments: sweeps that train networks, verify theorem families on them and analyse the
results across networks (tables, correlations, figures). Each is runnable as
``python -m boundcheck.harness.experiments.<name> CONFIG``."""
