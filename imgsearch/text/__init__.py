"""Text layer: normalisation (normalize) and the MiniLM text embedder (embed).

Nothing heavy is imported eagerly: `from imgsearch.text.normalize import ...` / `from imgsearch.text.embed import
TextEmbedder`.
"""

EMBED_DIM = 384
"""Width of every vector in the library: all-MiniLM-L6-v2's sentence space (captions, photos, queries)."""
