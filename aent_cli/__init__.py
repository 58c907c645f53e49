"""aent: GRPO with adaptive clamped entropy regularisation (AEnt) for reasoning LLMs."""
__version__ = "0.1.0"
