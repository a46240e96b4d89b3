"""recscope: a measurement platform for multi-stage recommender systems."""

__version__ = "0.1.0"
