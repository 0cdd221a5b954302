"""Choosing a family and its settings on a validation period before the test period, and the
plan `train` applies."""
