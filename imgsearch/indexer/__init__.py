"""Indexing stages: scan (walk folders, diff vs store) → decode (safe photo decoding) → pipeline."""
