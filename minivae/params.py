"""Named parameter arrays kept as views into one contiguous buffer.

A model stores its parameters and its gradient buffers as :class:`FlatArrays` so that an
optimiser updates all of them with one kernel call over ``.flat``.
"""

from __future__ import annotations

import numpy as np

from .kernels._cuda import array_module


class FlatArrays(dict):
    """Named arrays that are views into one contiguous 1-d buffer, ``.flat``, in name order.

    A model keeps its parameters (and its gradient buffers) this way so that an optimiser
    can update all of them with one kernel call over ``.flat`` instead of one call per
    array (:meth:`minivae.optim.Optimizer.step` checks :meth:`leads_with`). Reading,
    iterating and writing in place (``arrays[name][...] = value``) work as for a dict;
    rebinding or removing a name raises, because the new array would silently stop being
    part of ``.flat``.

    Parameters
    ----------
    xp : module
        NumPy or CuPy: where the buffer lives.
    shapes : dict name -> tuple of int
    dtype : numpy dtype
    """

    def __init__(self, xp, shapes: dict, dtype):
        super().__init__()
        sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes.values()]
        self.flat = xp.zeros(sum(sizes), dtype=dtype)
        offset = 0
        for (name, shape), size in zip(shapes.items(), sizes):
            dict.__setitem__(self, name, self.flat[offset : offset + size].reshape(shape))
            offset += size
        self.layout = tuple((name, tuple(shape)) for name, shape in shapes.items())

    @classmethod
    def copy_of(cls, xp, arrays: dict, dtype) -> FlatArrays:
        """A flat copy of ``arrays`` (host or device arrays, any order-preserving dict)."""
        flat = cls(xp, {name: tuple(value.shape) for name, value in arrays.items()}, dtype)
        for name, value in arrays.items():
            flat[name][...] = xp.asarray(value, dtype=dtype)
        return flat

    def leading(self, count: int) -> FlatArrays:
        """The first ``count`` arrays as a FlatArrays whose ``.flat`` is a view of the start
        of this one's: a model whose trainable parameters come first in its layout updates
        them alone with one optimiser call (the others stay frozen)."""
        view = FlatArrays.__new__(FlatArrays)
        layout = self.layout[:count]
        for name, _ in layout:
            dict.__setitem__(view, name, dict.__getitem__(self, name))
        size = sum(int(np.prod(shape, dtype=np.int64)) for _, shape in layout)
        view.flat = self.flat[:size]
        view.layout = layout
        return view

    def leads_with(self, other) -> bool:
        """True when ``other`` is a FlatArrays laid out like the start of this one."""
        return (isinstance(other, FlatArrays) and other.layout == self.layout[:len(other.layout)]
                and other.flat.dtype == self.flat.dtype)

    def __copy__(self):
        return FlatArrays.copy_of(array_module(self.flat), self, self.flat.dtype)

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __reduce__(self):
        return _flat_arrays_from, (dict(self),)

    def _refuse(self, *args, **kwargs):
        raise TypeError(
            "these arrays are views into one flat buffer; write into them in place "
            "(arrays[name][...] = value) instead of rebinding or removing a name"
        )

    __setitem__ = __delitem__ = __ior__ = _refuse
    pop = popitem = clear = update = setdefault = _refuse


def _flat_arrays_from(arrays: dict) -> FlatArrays:
    """Rebuild a :class:`FlatArrays` from named arrays (unpickling)."""
    first = next(iter(arrays.values()))
    return FlatArrays.copy_of(array_module(first), arrays, first.dtype)
