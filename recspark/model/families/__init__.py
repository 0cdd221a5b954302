"""Model families: their settings and fitted form (ALS, EASE, blend), how each is fitted, and
what they keep per registered version."""
