"""metalearn: meta-learning and continual-learning research on one shared protocol."""

__version__ = "0.1.0"
