"""Shared fixtures. Keep everything tiny: D = 16, hidden 8, attention 4, 4 bins, bags of 1–64 patches."""
