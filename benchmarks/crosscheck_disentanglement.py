"""Cross-check our disentanglement metrics against disent's (PyPI ``disent``).

Not part of CI: disent needs torch, so run it in a throwaway environment
that also sees this project (numpy, scikit-learn), e.g.

    python -m venv --system-site-packages .venv-disent
    .venv-disent/bin/pip install torch==2.13.0 disent   # CPU wheel on disk
    PYTHONPATH=. .venv-disent/bin/python benchmarks/crosscheck_disentanglement.py

Ground truth: procedural dSprites on a sub-grid (3 shapes x 6 scales x 10
orientations x 8 x 8 positions = 11,520 images, every 4th orientation and
position), held as one array shared by both libraries. Representation: a
hand-made "encoder" of image moments (centroid x and y, sqrt of area,
orientation moments cos/sin of 2*angle) plus two random pixel projections
(informative about everything, aligned with nothing).

MIG, SAP and DCI are computed by both on the *same* (train, test) arrays, so
they differ only by implementation (DCI: boosted trees' tie-breaking seed).
FactorVAE draws its own batches in each library (disent uses numpy's global
RNG), so its two numbers agree only up to sampling error. disent has no
BetaVAE or modularity metric; for those we print ours only.
"""
from __future__ import annotations

import importlib
import sys
import time
import types

import numpy as np

from vmivae_jax.data import dsprites
from vmivae_jax.evaluation import disentanglement_dci as ours_dci
from vmivae_jax.evaluation import disentanglement_interventions as ours_iv
from vmivae_jax.evaluation import disentanglement_metrics as ours

SUB_STEPS = (1, 1, 4, 4, 4)  # keep every k-th value of each dSprites factor
NUM_TRAIN, NUM_TEST = 10_000, 5_000
FVAE = dict(num_train=2_000, num_eval=1_000, num_variance_estimate=5_000)


def _import_disent_metrics():
    """disent.metrics, importing torchvision without its C++ operators.

    The PyPI torchvision wheel that pip pairs with torch 2.13.0 is the CUDA
    build: its _C.so links libtorch_cuda.so and does not load against the
    CPU torch wheel, and torchvision's import then fails while registering
    kernels for the missing operators ("operator torchvision::nms does not
    exist"). disent imports torchvision for datasets and transforms that the
    metrics never call, so we skip just those two registration modules.
    """
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # pylint: disable=broad-except
        print(f"[torchvision: {type(error).__name__}: {error}; importing it "
              "without its C++ operator registrations]")
        for name in list(sys.modules):
            if name.startswith("torchvision"):
                del sys.modules[name]
        for name in ("torchvision._meta_registrations",
                     "torchvision._autograd_registrations"):
            sys.modules[name] = types.ModuleType(name)
    return importlib.import_module("disent.metrics")


def _sub_grid():
    sizes = tuple(len(range(0, n, k)) for n, k in
                  zip(dsprites.factor_sizes, SUB_STEPS))
    grid = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), 1)
    images = dsprites.render(grid * np.array(SUB_STEPS))
    return sizes, images


_PROJECTION = np.random.default_rng(123).normal(size=(64 * 64, 2)) / 64.0


def moment_features(observations):
    """(B, 64, 64[, 1]) images (numpy or torch) -> (B, 7) float64 features."""
    if hasattr(observations, "detach"):
        observations = observations.detach().cpu().numpy()
    pixels = np.asarray(observations, dtype=np.float64).reshape(-1, 64, 64)
    rows, cols = np.mgrid[0:64, 0:64] + 0.5
    mass = pixels.sum(axis=(1, 2))
    cy = (pixels * rows).sum(axis=(1, 2)) / mass
    cx = (pixels * cols).sum(axis=(1, 2)) / mass
    dy, dx = rows - cy[:, None, None], cols - cx[:, None, None]
    mu20 = (pixels * dx * dx).sum(axis=(1, 2)) / mass
    mu02 = (pixels * dy * dy).sum(axis=(1, 2)) / mass
    mu11 = (pixels * dx * dy).sum(axis=(1, 2)) / mass
    spread = mu20 + mu02
    features = [cx / 8, cy / 8, np.sqrt(mass) / 4, (mu20 - mu02) / spread,
                2 * mu11 / spread]
    projection = pixels.reshape(len(pixels), -1) @ _PROJECTION
    return np.concatenate([np.stack(features, 1), projection], axis=1)


def main():
    start = time.time()
    sizes, images = _sub_grid()
    print(f"sub-grid {sizes}: {len(images)} images in {time.time() - start:.1f}s")
    ground_truth = ours.GroundTruth(
        factor_sizes=sizes,
        sample_factors=lambda rng, n: np.stack(
            [rng.integers(0, s, size=n) for s in sizes], 1),
        observations=lambda f: images[np.ravel_multi_index(tuple(f.T), sizes)],
        factor_names=dsprites.factor_names)
    rng = np.random.default_rng(0)
    z, y = ours.sample_representation(ground_truth, moment_features,
                                      NUM_TRAIN, rng)
    z_test, y_test = ours.sample_representation(ground_truth, moment_features,
                                                NUM_TEST, rng)
    metrics = _import_disent_metrics()
    mig_mod = importlib.import_module("disent.metrics._mig")
    sap_mod = importlib.import_module("disent.metrics._sap")
    dci_mod = importlib.import_module("disent.metrics._dci")
    rows = []

    def compare(name, mine, theirs):
        rows.append((name, mine, theirs))
        print(f"{name:28s} ours {mine:.6f}  disent "
              + ("   n/a" if theirs is None else f"{theirs:.6f}  diff "
                 f"{mine - theirs:+.2e}"), flush=True)

    compare("MIG", ours.mutual_info_gap(z, y),
            float(mig_mod._compute_mig(z.T, y.T)["mig.discrete_score"]))
    compare("SAP (discrete)", ours.sap_score(z, y, z_test, y_test),
            float(sap_mod._compute_sap(z.T, y.T, z_test.T, y_test.T,
                                       False)["sap.score"]))
    compare("SAP (continuous)", ours.sap_score(z, y, z_test, y_test,
                                               continuous_factors=True),
            float(sap_mod._compute_sap(z.T, y.T, z_test.T, y_test.T,
                                       True)["sap.score"]))
    compare("modularity", ours.modularity(z, y), None)
    t = time.time()
    mine = ours_dci.dci(z, y, z_test, y_test)
    theirs = dci_mod._compute_dci(z.T, y.T, z_test.T, y_test.T)
    for key in ("disentanglement", "completeness", "informativeness_train",
                "informativeness_test"):
        their_key = {"informativeness_train": "dci.informativeness_train",
                     "informativeness_test": "dci.informativeness_test"}.get(
                         key, f"dci.{key}")
        compare(f"DCI {key}", mine[key], float(theirs[their_key]))
    print(f"  (DCI both: {time.time() - t:.0f}s)")

    from disent.dataset import DisentDataset
    from disent.dataset.data import ArrayGroundTruthData
    data = ArrayGroundTruthData(images[..., None], factor_names=dsprites.
                                factor_names, factor_sizes=sizes)
    dataset = DisentDataset(data)
    np.random.seed(0)
    t = time.time()
    theirs = metrics.metric_factor_vae(dataset, moment_features, **FVAE)
    for threshold in (0.0, ours_iv.PRUNE_THRESHOLD):
        mine = ours_iv.factor_vae_score(ground_truth, moment_features,
                                        np.random.default_rng(1),
                                        prune_threshold=threshold, **FVAE)
        compare(f"FactorVAE eval (prune {threshold})", mine["eval_accuracy"],
                float(theirs["factor_vae.eval_accuracy"]))
    print(f"  (FactorVAE: {time.time() - t:.0f}s; disent prunes at 0.0)")
    beta = ours_iv.beta_vae_score(ground_truth, moment_features,
                                  np.random.default_rng(2), num_train=2_000,
                                  num_eval=1_000)
    compare("BetaVAE eval", beta["eval_accuracy"], None)
    print(f"total {time.time() - start:.0f}s")
    return rows


if __name__ == "__main__":
    main()
