"""Pure tensor functions: advantages, policy objectives, aggregation, entropies, coefficients.

Nothing here imports the rest of aent: every function takes tensors (with masks) and numbers.
"""
