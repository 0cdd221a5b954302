"""Judging recommenders on a held-out future: splits, what each would serve the test users, and
metrics with bootstrap intervals."""
