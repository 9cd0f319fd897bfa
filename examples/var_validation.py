"""VAR settings measured on validation frames carved from the training frames (never test frames).

For a regime of minivae.experiments.BENCHMARK_REGIMES, the training frames of the split are
split again ("interpolation", every 3rd training frame held out); VARegressor with default
settings is fitted on the rest and scored (PSNR, SSIM) on those validation frames, once per
value of the setting. Test frames are never touched.

    python examples/var_validation.py noise
    python examples/var_validation.py calibration [SEEDS]
    python examples/var_validation.py ceiling
    python examples/var_validation.py amplitude
    python examples/var_validation.py decoder [SEEDS]
    python examples/var_validation.py residual [SEEDS]
    python examples/var_validation.py query-amplitude [SEEDS]
    python examples/var_validation.py beta [SEEDS]
    python examples/var_validation.py network [SEEDS]

amplitude: the median over training frames of |b / a_i - 1|, b = sqrt(mean sigma) the query
amplitude and a_i = sqrt(sigma_i): how far the GP mean at a training input, (b / a_i) mu_i,
is from the frame's own code mu_i.

calibration: coverage of the validation pixels by predict(..., return_std=True) mean +- 2 std
(the decoded samples' spread, whose latent variance is scaled by c = tr(Mu^T A^-1 Mu) / (N k),
the maximum-likelihood factor of each group's covariance given its codes, plus the
leave-one-out decoder error VARegressor.loo_error_variance), by the latent spread alone
(decoder_error=False), and by the latent spread without c; per seed.

ceiling: VAR's validation PSNR against its own autoencoder's reconstruction of the
validation frames and against the pixel GP.

decoder: VAR with decoder="mlp" and decoder="conv" (minivae.conv), PSNR and SSIM of the
prediction and of the reconstruction, fit seconds, against the pixel GP; SEEDS (default
"0,1") the model seeds.

residual: VAR's prediction plus a pixel-space GP (minivae.baselines.PixelGP) fitted to its
residuals on the training frames, Y - VAR.predict(X), clipped to [0, 1]: a correction of the
decoder's reconstruction ceiling that makes the prediction at a training input its own
image; against VAR alone and the pixel GP, per seed.

query-amplitude: one fitted VARegressor predicting with query_amplitude="interpolated" (the
GP interpolation of the training frames' log amplitudes, minivae.var.query_amplitudes)
and with "mean" (the paper's sqrt(mean sigma), which training uses); PSNR and SSIM on the
validation frames and PSNR at the training inputs, per seed.

beta: VAR with the KL weight beta in (1, 0.3, 0.1, 0.03, 0.01) (VARegressor(beta=...); 1 is
the paper's ELBO), PSNR and SSIM of the prediction and of the reconstruction, per seed.

network: VAR with the default network (latent_dim=8, hidden=(256,)), latent_dim 4 and 16,
and hidden=(512,); PSNR, SSIM and fit seconds per seed.
"""
import json
import sys
import time

import numpy as np

from minivae import datasets, experiments, metrics
from minivae.kernels.threads import limited_threads
from minivae.var import VARegressor

REGIMES = ("sequences, every 4th frame kept", "postures (22 joint inputs), every 4th frame kept")
DECODER_REGIMES = ("sequences, every 2nd frame kept", "sequences, every 4th frame kept",
                   "sequences, every 8th frame kept",
                   "postures (22 joint inputs), every 4th frame kept",
                   "postures (22 joint inputs), every 8th frame kept")
CEILING_REGIMES = ("sequences, every 2nd frame kept", "sequences, every 8th frame kept",
                   "postures (22 joint inputs), every 4th frame kept")


def validation_split(name):
    source, options, mode, split = experiments.BENCHMARK_REGIMES[name]
    data = (datasets.make_image_sequences if source == "sequences" else datasets.make_postures)(**options)
    settings = {**experiments.DEFAULT_SETTINGS, **split}
    train_idx, _ = experiments.split_data(data, mode, settings)
    train = data.subset(train_idx)
    fit_idx, val_idx = train.split("interpolation", n_anchor_every=3)
    return train.subset(fit_idx), train.subset(val_idx)


def score(model, fit, val, **predict_options):
    predicted = model.predict(val.X, val.groups, **predict_options)
    return metrics.summarize(val.Y, np.asarray(predicted, dtype=np.float64).reshape(val.Y.shape))


def main(which, seeds="0,1"):
    rows = []
    regimes = {"ceiling": CEILING_REGIMES, "decoder": DECODER_REGIMES,
               "residual": DECODER_REGIMES,
               "query-amplitude": DECODER_REGIMES, "beta": DECODER_REGIMES,
               "calibration": DECODER_REGIMES, "network": DECODER_REGIMES}.get(which, REGIMES)
    with limited_threads(1):
        for name in regimes:
            fit, val = validation_split(name)
            if which in ("decoder", "residual", "query-amplitude", "beta", "calibration",
                         "network"):
                rows_of = {"decoder": decoders, "residual": residual,
                           "query-amplitude": query_amplitude, "beta": betas,
                           "calibration": calibration, "network": networks}[which]
                for row in rows_of(fit, val, [int(seed) for seed in seeds.split(",")]):
                    rows.append({"regime": name, **row})
                    print(json.dumps(rows[-1]), flush=True)
            if which == "noise":
                for noise in (1e-2, 1e-3, 1e-4, 1e-5):
                    model = VARegressor(noise=noise, seed=0).fit(fit.X, fit.Y, fit.groups,
                                                                 progress=False)
                    sigma = np.exp(model.encode(fit.Y)[2])
                    rows.append({"regime": name, "noise": noise, **score(model, fit, val),
                                 "sigma_median": float(np.median(sigma)),
                                 "sigma_range": [float(sigma.min()), float(sigma.max())]})
                    print(json.dumps(rows[-1]), flush=True)
            if which == "amplitude":
                model = VARegressor(seed=0).fit(fit.X, fit.Y, fit.groups, progress=False)
                sigma = np.exp(model.encode(fit.Y)[2].astype(np.float64))
                ratio = np.concatenate([np.sqrt(sigma[fit.groups == g].mean() / sigma[fit.groups == g])
                                        for g in np.unique(fit.groups)])
                rows.append({"regime": name, "median_abs_ratio_minus_1": float(np.median(np.abs(ratio - 1))),
                             "max_abs_ratio_minus_1": float(np.max(np.abs(ratio - 1))),
                             "validation_psnr": score(model, fit, val)["psnr"]})
                print(json.dumps(rows[-1]), flush=True)
            if which == "ceiling":
                rows.append({"regime": name, **ceiling(fit, val)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def ml_scale(model, fit, group):
    from minivae.gp import factorise

    rows = fit.groups == group
    mu, _, logsigma = model.encode(fit.Y[rows])
    theta = np.array([np.log(model.lengthscale_), 0.0, np.log(model.noise)])
    factor = factorise(fit.X[rows], theta, amplitudes=np.sqrt(np.exp(logsigma.astype(np.float64))))
    codes = mu.astype(np.float64)
    return float(np.sum(codes * np.asarray(factor.solve(codes))) / codes.size)


def calibration(fit, val, seeds, n_samples=32):
    """One row per seed: coverage of the validation pixels by mean +- 2 std with the
    default spread (latent spread and the leave-one-out decoder error), with the latent
    spread alone, and with the latent spread without its scale c; the first two also over
    the object's pixels alone (truth >= 0.02)."""
    for seed in seeds:
        model = VARegressor(seed=seed).fit(fit.X, fit.Y, fit.groups, progress=False)
        yield {"seed": seed, **_coverages(model, fit, val, n_samples)}


def _coverages(model, fit, val, n_samples):
    images, std = model.predict(val.X, val.groups, return_std=True, n_samples=n_samples)
    _, latent_std = model.predict(val.X, val.groups, return_std=True, n_samples=n_samples,
                                  decoder_error=False)
    mean, var = model.predict_latent(val.X, val.groups)
    scales = {int(g): ml_scale(model, fit, g) for g in np.unique(fit.groups)}
    scale = np.array([scales[int(g)] for g in val.groups])
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((n_samples, *mean.shape))
    codes = mean[None] + np.sqrt(var / scale)[None, :, None] * eps
    decoded = model.decode(codes.reshape(-1, mean.shape[1]).astype(np.float32))
    unscaled_std = decoded.reshape(n_samples, mean.shape[0], -1).std(axis=0)
    object_pixels = val.Y >= 0.02
    return {"coverage_2std": experiments.coverage(val.Y, images, std),
            "coverage_2std_latent_only": experiments.coverage(val.Y, images, latent_std),
            "coverage_2std_without_scale": experiments.coverage(val.Y, images, unscaled_std),
            "object_coverage_2std": float(np.mean((np.abs(val.Y - images) <= 2 * std)
                                                  [object_pixels])),
            "object_coverage_2std_latent_only": float(np.mean(
                (np.abs(val.Y - images) <= 2 * latent_std)[object_pixels])),
            "ml_scale_median": float(np.median(list(scales.values())))}


def ceiling(fit, val):
    """Where VAR's error comes from: its prediction against the same autoencoder's
    reconstruction of the validation frames (decode(encode(y)), the best any regressed code
    could do with this decoder) and against the pixel GP."""
    model = VARegressor(seed=0).fit(fit.X, fit.Y, fit.groups, progress=False)
    codes = model.encode(val.Y)[0]
    reconstruction = model.decode(codes).astype(np.float64)
    pixel = experiments.PixelGP().fit(fit.X, fit.Y, fit.groups).predict(val.X, val.groups)
    return {"var_psnr": score(model, fit, val)["psnr"],
            "var_reconstruction_psnr": metrics.summarize(val.Y, reconstruction)["psnr"],
            "pixel_gp_psnr": metrics.summarize(val.Y, pixel)["psnr"],
            "n_fit": int(fit.n), "n_val": int(val.n)}


def decoders(fit, val, seeds):
    """One row per seed and decoder: validation PSNR/SSIM of VAR's prediction and of its
    autoencoder's reconstruction, and the fit time; the pixel GP's on the same frames."""
    pixel = experiments.PixelGP().fit(fit.X, fit.Y, fit.groups).predict(val.X, val.groups)
    pixel_scores = metrics.summarize(val.Y, pixel)
    for seed in seeds:
        for decoder in ("mlp", "conv"):
            start = time.perf_counter()
            model = VARegressor(decoder=decoder, seed=seed).fit(fit.X, fit.Y, fit.groups,
                                                                progress=False)
            seconds = time.perf_counter() - start
            predicted = score(model, fit, val)
            reconstruction = model.decode(model.encode(val.Y)[0]).astype(np.float64)
            recon = metrics.summarize(val.Y, reconstruction)
            yield {"seed": seed, "decoder": decoder, "psnr": predicted["psnr"],
                   "ssim": predicted["ssim"], "reconstruction_psnr": recon["psnr"],
                   "reconstruction_ssim": recon["ssim"], "fit_seconds": round(seconds, 1),
                   "pixel_gp_psnr": pixel_scores["psnr"], "pixel_gp_ssim": pixel_scores["ssim"]}


def residual(fit, val, seeds):
    """One row per seed: VAR alone, VAR plus the pixel GP of its training residuals, and
    the pixel GP, PSNR and SSIM on the validation frames."""
    pixel = experiments.PixelGP().fit(fit.X, fit.Y, fit.groups).predict(val.X, val.groups)
    for seed in seeds:
        model = VARegressor(seed=seed).fit(fit.X, fit.Y, fit.groups, progress=False)
        on_fit = np.asarray(model.predict(fit.X, fit.groups), dtype=np.float64)
        correction = experiments.PixelGP().fit(fit.X, fit.Y - on_fit, fit.groups)
        predicted = np.asarray(model.predict(val.X, val.groups), dtype=np.float64)
        corrected = np.clip(predicted + correction.predict(val.X, val.groups), 0.0, 1.0)
        row = {"seed": seed}
        for label, images in (("var", predicted), ("var_residual", corrected),
                              ("pixel_gp", pixel)):
            scores = metrics.summarize(val.Y, images)
            row[label + "_psnr"], row[label + "_ssim"] = scores["psnr"], scores["ssim"]
        yield row


def query_amplitude(fit, val, seeds):
    """One row per seed: one fitted model predicting with each query-amplitude rule."""
    for seed in seeds:
        model = VARegressor(seed=seed).fit(fit.X, fit.Y, fit.groups, progress=False)
        row = {"seed": seed}
        for rule in ("interpolated", "mean"):
            model.set_params(query_amplitude=rule)
            scores = metrics.summarize(val.Y, np.asarray(model.predict(val.X, val.groups),
                                                         dtype=np.float64))
            on_fit = metrics.summarize(fit.Y, np.asarray(model.predict(fit.X, fit.groups),
                                                         dtype=np.float64))
            row[rule] = {"psnr": scores["psnr"], "ssim": scores["ssim"],
                         "training_input_psnr": on_fit["psnr"]}
        yield row


def betas(fit, val, seeds):
    """One row per seed and KL weight: validation PSNR/SSIM of the prediction and of the
    autoencoder's reconstruction."""
    for seed in seeds:
        for beta in (1.0, 0.3, 0.1, 0.03, 0.01):
            model = VARegressor(beta=beta, seed=seed).fit(fit.X, fit.Y, fit.groups,
                                                          progress=False)
            predicted = score(model, fit, val)
            reconstruction = model.decode(model.encode(val.Y)[0]).astype(np.float64)
            recon = metrics.summarize(val.Y, reconstruction)
            yield {"seed": seed, "beta": beta, "psnr": predicted["psnr"],
                   "ssim": predicted["ssim"], "reconstruction_psnr": recon["psnr"]}


def networks(fit, val, seeds):
    """One row per seed and network size: validation PSNR/SSIM and fit seconds."""
    for seed in seeds:
        for label, options in (("default", {}), ("latent_dim=4", {"latent_dim": 4}),
                               ("latent_dim=16", {"latent_dim": 16}),
                               ("hidden=(512,)", {"hidden": (512,)})):
            start = time.perf_counter()
            model = VARegressor(seed=seed, **options).fit(fit.X, fit.Y, fit.groups,
                                                          progress=False)
            seconds = time.perf_counter() - start
            yield {"seed": seed, "network": label, **score(model, fit, val),
                   "fit_seconds": round(seconds, 1)}


if __name__ == "__main__":
    main(*sys.argv[1:])
