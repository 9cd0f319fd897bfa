"""minivae.kernels: the performance-critical numerical kernels.

Each kernel has three implementations with one signature, chosen by ``impl=``:

- ``"reference"``: plain NumPy, written for clarity; the executable specification;
- ``"cpu"``: Numba ``njit`` (parallel where it pays, ``cache=True``);
- ``"cuda"``: Numba-CUDA. On NumPy arrays it runs under Numba's CUDA simulator
  (``NUMBA_ENABLE_CUDASIM=1``); on CuPy arrays, on the GPU on CuPy's current stream.

Importing this package imports neither CuPy nor numba-cuda; the cuda implementations
import them on first use. This package knows nothing of the model layer.
"""

from .adam import adam_step
from .bernoulli import bernoulli_nll_and_grad
from .dense import add_bias, bias_grad
from .rbf import rbf_grad_contract, rbf_matrix
from .reparam import reparam_backward, reparam_forward

IMPLS = ("reference", "cpu", "cuda")

__all__ = [
    "IMPLS",
    "adam_step",
    "add_bias",
    "bernoulli_nll_and_grad",
    "bias_grad",
    "rbf_grad_contract",
    "rbf_matrix",
    "reparam_backward",
    "reparam_forward",
]
