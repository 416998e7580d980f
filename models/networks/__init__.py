"""Neural networks used by the toolkit (architectures and checkpoint loaders)."""

from .bisenet import BISENET_CLASSES, BiSeNet, load_bisenet

__all__ = ["BISENET_CLASSES", "BiSeNet", "load_bisenet"]
