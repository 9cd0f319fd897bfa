"""Gaussian-process regression of a noisy sine, in one page.

    python examples/gp_regression.py --out runs/gp_example

Draws noisy samples of sin(x), fits a GPRegressor by maximising the log marginal
likelihood over (lengthscale, signal variance, noise variance), prints what it found, and
writes a plot of the data, the posterior mean and the 95% band of the latent function.
The noise standard deviation used to make the data is known here, so you can compare it
with the fitted noise variance (printed as a standard deviation too).

For your own data in a CSV file (inputs, then y as the last column):

    minivae train gp --data my.csv --out runs/my_gp
"""

import argparse
from pathlib import Path

import numpy as np

import minivae
from minivae.plots import plot_gp_1d


def make_data(n, noise_std, seed):
    """n inputs uniform on [0, 2 pi] (a gap in the middle) and y = sin(x) + noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 2.0 * np.pi, size=n)
    x = x[(x < 2.5) | (x > 3.5)]  # leave a gap: the band widens where there are no data
    y = np.sin(x) + noise_std * rng.normal(size=x.size)
    return x[:, None], y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="number of noisy samples")
    parser.add_argument("--noise-std", type=float, default=0.15, help="noise standard deviation")
    parser.add_argument("--restarts", type=int, default=2, help="random restarts of L-BFGS-B")
    parser.add_argument("--ard", action="store_true", help="one lengthscale per input column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda-sim"])
    parser.add_argument("--out", default="runs/gp_example", help="folder for the plot")
    args = parser.parse_args(argv)

    X, y = make_data(args.n, args.noise_std, args.seed)
    model = minivae.GPRegressor(n_restarts=args.restarts, ard=args.ard, seed=args.seed,
                                device=args.device).fit(X, y)

    print(f"{X.shape[0]} points; fitted hyperparameters:")
    print(f"  lengthscale     {np.round(model.lengthscale_, 4)}")
    print(f"  signal variance {model.variance_:.4f}")
    print(f"  noise variance  {model.noise_:.5f}  (std {np.sqrt(model.noise_):.4f}; "
          f"the data were made with std {args.noise_std})")
    print(f"  log marginal likelihood {model.log_marginal_likelihood_value_:.3f}")

    grid = np.linspace(-0.5, 2.0 * np.pi + 0.5, 400)[:, None]
    mean, std = model.predict(grid, return_std=True)  # std of the latent f, not of y
    path = Path(args.out) / "gp_regression.png"
    plot_gp_1d(X, y, grid, mean, std, path,
               title="GP regression of sin(x): posterior mean and 95% band of f")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
