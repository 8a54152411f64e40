"""Text layer: normalisation (normalize) and the MiniLM text embedder (embed).

Nothing is imported eagerly: `from imgsearch.text.normalize import ...` / `from imgsearch.text.embed import TextEmbedder`.
"""
