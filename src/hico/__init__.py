"""hico: long-video understanding with hierarchical visual-token compression (a VideoChat-Flash runtime)."""

__version__ = "0.1.0"
