"""lsurf: loss-surface sweeps of neural networks, after Li et al. (NeurIPS 2018)."""

__version__ = "0.1.0"
