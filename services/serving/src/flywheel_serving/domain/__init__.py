"""Plain-Python serving logic: traffic split, Open Inference Protocol codec, outputs."""
