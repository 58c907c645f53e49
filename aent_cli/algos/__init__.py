"""Pure tensor functions: advantages, policy objectives, aggregation, entropies, coefficients.

Nothing here imports the rest of aent (but the leaf aent_cli.cache, for the compiled entropy
kernels): every function takes tensors (with masks) and numbers.
"""
