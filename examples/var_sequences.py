"""Does VAR beat the two-stage model on the image sequences? (Yoo et al., CVPR 2017)

Six textured objects turn and move over 48 frames each (32 x 32 pixels); the input is a
frame's position t in its sequence. Every method is trained on the anchor frames and
asked for the held-out ones:

- nearest_anchor: the training frame nearest in t (no model at all);
- pixel_gp:       a Gaussian process per sequence straight on the 1024 pixels;
- two_stage:      a VAE trained alone, then a GP per sequence on its codes;
- var:            Variational Autoencoded Regression, the VAE and GP trained together.

The paper's claim: VAR's held-out PSNR beats the two-stage model's. This script runs each
method with several seeds (the data set stays the same) and prints mean +- std.

    python examples/var_sequences.py                      # 3 seeds, interpolation
    python examples/var_sequences.py --mode extrapolation --seeds 0 1 2 3 4
"""
import argparse

from minivae.experiments import compare_seeds
from minivae.reports import format_seed_table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="interpolation",
                        choices=["interpolation", "extrapolation"],
                        help="hold out every 4th frame (interpolation) or each sequence's last "
                             "quarter (extrapolation)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    parser.add_argument("--epochs", type=int, nargs=3, default=[300, 600, 150],
                        metavar=("PRE", "JOINT", "FINE"),
                        help="VAR's phases; the two-stage VAE trains for their sum")
    parser.add_argument("--latent", type=int, default=8, help="latent dimension of both VAEs")
    parser.add_argument("--out", default=None, help="write each seed's report and figures here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    comparison = compare_seeds("sequences", args.mode, seeds=args.seeds, epochs=args.epochs,
                               settings={"latent_dim": args.latent}, out_dir=args.out,
                               progress=not args.no_progress)
    print(format_seed_table(comparison))
    psnr = {name: values["psnr"]["mean"] for name, values in comparison["summary"].items()}
    verdict = "beats" if psnr["var"] > psnr["two_stage"] else "does not beat"
    print(f"\nVAR ({psnr['var']:.2f} dB) {verdict} two-stage ({psnr['two_stage']:.2f} dB) "
          f"in mean held-out PSNR over seeds {args.seeds}.")


if __name__ == "__main__":
    main()
