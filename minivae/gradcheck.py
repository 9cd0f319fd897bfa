"""Finite-difference gradient checking, for tests and for learners.

    >>> from minivae.gradcheck import gradcheck_vae, format_table
    >>> print(format_table(gradcheck_vae("bernoulli", "tanh")))      # doctest: +SKIP

Every analytic gradient in minivae is checked this way, in float64, against central
differences ``(f(p + h e_i) - f(p - h e_i)) / 2h``; their truncation error is O(h^2) and
their rounding error O(machine_eps |f| / h), so ``h = 1e-6`` gives about 1e-9 relative
accuracy on well-scaled losses.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-30
_EPS_MACHINE = float(np.finfo(np.float64).eps)


def check_gradients(loss_fn, params: dict, analytic_grads: dict, eps=1e-6,
                    max_entries_per_param=None, seed=0) -> list:
    """Compare analytic gradients with central finite differences, parameter by parameter.

    Parameters
    ----------
    loss_fn : callable () -> float
        Evaluates the loss at the current values of ``params``.
    params : dict name -> float64 array
        Perturbed in place one entry at a time and restored exactly, also when
        ``loss_fn`` raises.
    analytic_grads : dict name -> array
        Claimed gradient of the loss for each name in ``params``.
    eps : float
        Step ``h`` of the central difference.
    max_entries_per_param : int or None
        Check at most this many entries of each parameter, chosen at random (None: all).
    seed : int
        Seed of the entry choice.

    Returns
    -------
    rows : list of dict
        One per parameter: ``name``, ``shape``, ``n_checked``, ``max_abs_analytic``,
        ``max_abs_numeric``, ``rel_error = max|a - n| / max(max|a|, max|n|, tiny)``
        over the checked entries, ``fd_resolution`` and ``below_fd_resolution`` (see
        Notes).

    Raises
    ------
    ValueError
        A parameter is not float64 (single precision cannot resolve the differences),
        or a gradient is missing or has the wrong shape.

    Notes
    -----
    Rounding the two loss values, each to about :math:`\\epsilon_{mach} |f|`, limits what
    a central difference can resolve to

    .. math:: r = \\epsilon_{mach} \\max |f(p \\pm h e_i)| / h,

    reported as ``fd_resolution``. A parameter whose analytic and numeric gradients are
    both at most r in magnitude (say ``f = 1000 + sum(w**2)`` at ``w ~ 1e-9``) cannot be
    checked at this ``h``: its ``rel_error`` compares rounding noise and is meaningless
    (typically 1). Such a row has ``below_fd_resolution`` True: it is neither passed nor
    failed; check it with a loss of smaller magnitude (subtract the constant) or larger
    parameter values.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for name, value in params.items():
        if value.dtype != np.float64:
            raise ValueError(
                f"parameter {name!r} is {value.dtype}; finite differences need float64 "
                "(build the model with dtype='float64')"
            )
        if name not in analytic_grads:
            raise ValueError(f"analytic_grads has no entry for parameter {name!r}")
        analytic_full = np.asarray(analytic_grads[name], dtype=np.float64)
        if analytic_full.shape != value.shape:
            raise ValueError(
                f"gradient of {name!r} has shape {analytic_full.shape}, parameter has "
                f"{value.shape}"
            )
        flat_indices = np.arange(value.size)
        if max_entries_per_param is not None and value.size > max_entries_per_param:
            flat_indices = np.sort(rng.choice(value.size, max_entries_per_param, replace=False))
        numeric = np.empty(flat_indices.size)
        analytic = analytic_full.reshape(-1)[flat_indices]
        max_abs_loss = 0.0
        for j, flat in enumerate(flat_indices):
            index = np.unravel_index(flat, value.shape)
            original = float(value[index])
            try:
                value[index] = original + eps
                loss_plus = float(loss_fn())
                value[index] = original - eps
                loss_minus = float(loss_fn())
            finally:
                value[index] = original
            numeric[j] = (loss_plus - loss_minus) / (2 * eps)
            max_abs_loss = max(max_abs_loss, abs(loss_plus), abs(loss_minus))
        max_abs_analytic = float(np.max(np.abs(analytic), initial=0.0))
        max_abs_numeric = float(np.max(np.abs(numeric), initial=0.0))
        rel_error = float(np.max(np.abs(analytic - numeric), initial=0.0)) / max(
            max_abs_analytic, max_abs_numeric, _TINY)
        fd_resolution = _EPS_MACHINE * max_abs_loss / eps
        rows.append({
            "name": name, "shape": tuple(value.shape), "n_checked": int(flat_indices.size),
            "max_abs_analytic": max_abs_analytic, "max_abs_numeric": max_abs_numeric,
            "rel_error": rel_error, "fd_resolution": fd_resolution,
            "below_fd_resolution": max(max_abs_analytic, max_abs_numeric) <= fd_resolution,
        })
    return rows


def format_table(rows: list) -> str:
    """The rows of :func:`check_gradients` as a fixed-width text table.

    The last line gives the worst relative error over the rows that finite differences
    can resolve; rows below resolution are marked and listed after it instead.
    """
    header = (f"{'parameter':<16} {'shape':<12} {'checked':>7} {'max|analytic|':>14} "
              f"{'max|numeric|':>14} {'rel. error':>10}")
    lines = [header, "-" * len(header)]
    unresolved = []
    for row in rows:
        line = (f"{row['name']:<16} {str(row['shape']):<12} {row['n_checked']:>7} "
                f"{row['max_abs_analytic']:>14.6e} {row['max_abs_numeric']:>14.6e} "
                f"{row['rel_error']:>10.2e}")
        if row.get("below_fd_resolution", False):
            unresolved.append(row)
            line += f"  below FD resolution {row['fd_resolution']:.1e}"
        lines.append(line)
    resolved = [row["rel_error"] for row in rows if not row.get("below_fd_resolution", False)]
    if resolved or not unresolved:
        lines.append(f"worst relative error: {max(resolved, default=0.0):.2e}")
    if unresolved:
        names = ", ".join(row["name"] for row in unresolved)
        lines.append(f"not checked, gradients below finite-difference resolution: {names}")
    return "\n".join(lines)


def gradcheck_vae(likelihood="bernoulli", activation="tanh", fixed_variance=None,
                  n_samples=2, beta=0.7, input_dim=6, latent_dim=3, hidden=(5, 4), n=4,
                  seed=0, eps=1e-6, max_entries_per_param=None) -> list:
    """Check :meth:`minivae.VAE.loss_and_grads` of a small float64 VAE by finite differences.

    The noise ``eps`` is drawn once and passed to every loss evaluation, so the loss is a
    deterministic function of the parameters. Bernoulli data are uniform in [0, 1];
    Gaussian data standard normal.

    Returns
    -------
    rows : list of dict
        See :func:`check_gradients`.
    """
    from .vae import VAE

    vae = VAE(input_dim, latent_dim, hidden=hidden, activation=activation,
              likelihood=likelihood, n_samples=n_samples, beta=beta,
              fixed_variance=fixed_variance, dtype="float64", seed=seed, device="cpu")
    rng = np.random.default_rng(seed + 1)
    if likelihood == "bernoulli":
        X = rng.uniform(0.0, 1.0, size=(n, input_dim))
    else:
        X = rng.standard_normal((n, input_dim))
    noise = rng.standard_normal((n_samples, n, latent_dim))
    for name, value in vae.params.items():
        if name.endswith(".b"):
            value[...] = 0.1 * rng.standard_normal(value.shape)
    _, grads = vae.loss_and_grads(X, eps=noise)
    return check_gradients(lambda: vae.loss_and_grads(X, eps=noise)[0], vae.params, grads,
                           eps=eps, max_entries_per_param=max_entries_per_param, seed=seed)
