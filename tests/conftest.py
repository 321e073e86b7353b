"""Shared test setup: one torch thread, float64, hypothesis profiles (CI's built-in 'ci'
profile, extended with deadline=None for torch tests; "dev" runs fewer examples, derandomized
so the README's test command gives the same result on every run: set HYPOTHESIS_EXPLORE=1 to
draw fresh examples when hunting for counterexamples)."""

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=25,
    derandomize=not os.environ.get("HYPOTHESIS_EXPLORE"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
