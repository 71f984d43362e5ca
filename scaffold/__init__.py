"""scaffold: turn a PyTorch backbone into a timm/TerraTorch backbone and a benchmark that runs."""

__version__ = "0.1.0"
