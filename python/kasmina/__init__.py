"""kasmina: a C++20 tensor runtime with autograd and the morphogenetic Kasmina layers.

The names mirror the C++ API (kasmina.h) in snake_case: tensors and their factories, the
differentiable ops, ``kasmina.nn`` (modules), ``kasmina.optim`` (optimizers), and
``kasmina.morph`` (kernel artifacts, store, cache, ``wrap()``, telemetry). Tensors share memory
with NumPy (``kasmina.from_numpy``, ``np.asarray(t)``) and with PyTorch through DLPack
(``kasmina.from_dlpack``, ``torch.utils.dlpack.from_dlpack(t)``). C++ errors arrive as
``kasmina.Error`` (``ShapeError``, ``DTypeError``, ...) carrying the C++ message.
"""
import contextlib

from ._kasmina import *  # noqa: F401,F403
from ._kasmina import morph, nn, optim, set_grad_enabled, is_grad_enabled  # noqa: F401
from ._kasmina import __doc__ as _extension_doc  # noqa: F401

wrap = morph.wrap


@contextlib.contextmanager
def no_grad():
    """Turns graph recording off inside the block (kasmina::NoGradGuard)."""
    previous = is_grad_enabled()
    set_grad_enabled(False)
    try:
        yield
    finally:
        set_grad_enabled(previous)
