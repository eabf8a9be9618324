"""The model artifact: the one format `train` writes and `serve` reads.

Kept in its own package so that neither program imports the other (DESIGN: arrows point one way).
`manifest` is pure Python (the CLI reads manifests without importing torch); `architectures` needs torch.
"""
