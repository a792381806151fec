"""Companion modules reproducing NeurIPS-2025 gradient-descent papers on mixvi.optim and mixvi.loop."""
