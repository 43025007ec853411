"""Pure functions on saved outputs (logits, labels, run tables): metrics, attacks, tables.

No Ray, no torch, no training here: everything takes numpy arrays or pandas frames.
"""
