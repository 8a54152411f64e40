"""Indexing: scan (walk folders) → plan (diff vs store) → loader (decode in workers) → rules → runner (one run)."""
