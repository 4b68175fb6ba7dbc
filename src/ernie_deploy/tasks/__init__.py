"""Task heads: tokenization, token_cls, seq_cls, embedding, rerank (pure-numpy post-processing)."""
