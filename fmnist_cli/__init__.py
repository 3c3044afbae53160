"""fmnist: an experiment runner for dense neural networks on Fashion-MNIST."""

__version__ = "0.2.0"

from .config import OptimizerSpec, RunConfig  # noqa: E402  (stdlib-only: keeps `fmnist --help` fast)

__all__ = ["RunConfig", "OptimizerSpec", "__version__"]
