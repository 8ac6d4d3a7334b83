"""smoothlive: a live streaming origin in the place of IIS Live Smooth Streaming."""

__version__ = "0.1.0"
