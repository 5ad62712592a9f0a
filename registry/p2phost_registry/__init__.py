"""The p2phost registry: JSON API, Python simple index and web marketplace over one store."""

__all__: list[str] = []
