"""Search layer: bm25 (SQLite FTS5), dense (FAISS VectorIndex), fuse (RRF / weighted sum).

Import the submodules directly; nothing heavy is imported here.
"""
