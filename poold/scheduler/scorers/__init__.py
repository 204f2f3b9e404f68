"""Scorers, one per module; each returns 0..100, higher is better."""
