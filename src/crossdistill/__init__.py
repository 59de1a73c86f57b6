"""crossdistill: distill a large language model into a smaller one, across tokenizers."""

__version__ = "0.1.0"
