"""Train a VAE on the 8x8 handwritten digits and look at what it learned.

    python examples/vae_digits.py                  # the documented settings, ~5 s on one core
    python examples/vae_digits.py --epochs 100 --latent-dim 2 --out runs/digits2d

Prints the held-out ELBO (and an importance-sampled log-likelihood) in nats per image and
writes, under --out:
  reconstructions.png   held-out digits (top row) and their reconstructions decode(mu(x))
  samples.png           decoder means for codes drawn from the prior N(0, I)
  model.npz             the trained model; reload it with minivae.VAE.load(path)

The defaults are the "documented example settings" that tests/test_vae_peer.py trains
with both minivae and PyTorch autograd (the two held-out ELBOs agree within 1%).
"""

import argparse
from pathlib import Path

import numpy as np

from minivae import VAE
from minivae.datasets import load_digits
from minivae.plots import image_grid


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128],
                        help="encoder hidden widths (the decoder mirrors them)")
    parser.add_argument("--activation", default="relu", choices=["relu", "tanh", "softplus"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-test", type=int, default=297, help="held-out digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--out", type=Path, default=Path("runs/vae_digits"))
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args()


def main():
    args = parse_args()
    # Fixed split: a permutation drawn with seed 0, the first n_test digits held out.
    X = load_digits()
    order = np.random.default_rng(0).permutation(len(X))
    X_test, X_train = X[order[:args.n_test]], X[order[args.n_test:]]

    vae = VAE(input_dim=64, latent_dim=args.latent_dim, hidden=args.hidden,
              activation=args.activation, likelihood="bernoulli", seed=args.seed,
              device=args.device)
    history = vae.fit(X_train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      validation_data=X_test, progress=not args.no_progress).history_
    for epoch in range(0, args.epochs, max(1, args.epochs // 10)):
        print(f"epoch {history['epoch'][epoch]:4d}  train ELBO {history['train_elbo'][epoch]:9.3f}"
              f"  held-out ELBO {history['val_elbo'][epoch]:9.3f}")

    print(f"held-out ELBO:              {vae.score(X_test):.3f} nats per image")
    log_px = vae.log_likelihood(X_test, n_importance=500)
    print(f"held-out log p(x) (S=500):  {log_px.mean():.3f} nats per image")

    args.out.mkdir(parents=True, exist_ok=True)
    shown = X_test[:10]
    image_grid(np.concatenate([shown, vae.reconstruct(shown)]), args.out / "reconstructions.png",
               nrow=2, row_labels=["data", "recon."])
    image_grid(vae.sample(30, seed=args.seed), args.out / "samples.png", nrow=3)
    vae.save(args.out / "model.npz")
    print(f"wrote {args.out / 'reconstructions.png'}, {args.out / 'samples.png'}, "
          f"{args.out / 'model.npz'}")


if __name__ == "__main__":
    main()
