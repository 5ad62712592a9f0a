"""p2phost: a plugin host for peer-to-peer messaging."""

__version__ = "0.1.0"

__all__ = ["__version__"]
