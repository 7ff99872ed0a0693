"""Disentanglement metrics against closed-form answers and a second MI implementation."""
import itertools

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from vmivae_jax.evaluation import disentanglement_dci as dci_lib
from vmivae_jax.evaluation import disentanglement_interventions as interventions
from vmivae_jax.evaluation import disentanglement_metrics as metrics

SIZES = (3, 4, 5)


def _grid(sizes, repeats):
    """Every factor combination `repeats` times: factors exactly uniform and
    independent in the sample, so plug-in MI values are exact."""
    return np.repeat(np.array(list(itertools.product(*map(range, sizes)))),
                     repeats, axis=0)


def _uniform(rng, n, sizes=SIZES):
    return np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1)


def _perfect_code(factors, rng, noise_dims=2):
    """A monotone (affine) transform of each factor plus pure-noise dims."""
    noise = rng.normal(size=(len(factors), noise_dims))
    return np.concatenate([2.0 * factors + 1.0, noise], axis=1)


GROUND_TRUTH = metrics.GroundTruth(
    factor_sizes=SIZES, sample_factors=_uniform,
    observations=lambda factors: factors.astype(np.float64))


def _perfect_fn(observations):
    rng = np.random.default_rng(int(observations.sum()) % 2**31)
    return _perfect_code(observations, rng)


_ROTATION = np.linalg.qr(np.random.default_rng(5).normal(size=(5, 5)))[0]


# ---------------------------------------------------------------- MIG
def test_mig_exact_values_on_a_full_grid():
    factors = _grid((4, 3, 5), repeats=10)
    assert metrics.mutual_info_gap(factors * 2.0 + 1, factors) == 1.0
    # f1 and f2 merged in one dim (MIG does not penalise it), plus a coarse
    # copy of f1: f1's gap is (log 4 - log 2) / log 4 = 1/2, the others 1.
    merged = np.stack([factors[:, 0] * 3 + factors[:, 1], factors[:, 0] // 2,
                       factors[:, 2]], axis=1).astype(float)
    assert metrics.mutual_info_gap(merged, factors) == pytest.approx(
        (0.5 + 1 + 1) / 3, abs=1e-12)
    only_merged = np.delete(merged, 1, axis=1)
    assert metrics.mutual_info_gap(only_merged, factors) == pytest.approx(1.0)


def test_mig_perfect_rotated_and_shuffled_codes():
    rng = np.random.default_rng(0)
    factors = _uniform(rng, 3000)
    code = _perfect_code(factors, rng)
    assert metrics.mutual_info_gap(code, factors) > 0.95
    assert metrics.mutual_info_gap(code @ _ROTATION, factors) < 0.5
    shuffled = np.stack([rng.permutation(c) for c in code.T], axis=1)
    assert metrics.mutual_info_gap(shuffled, factors) < 0.05


def test_histogram_discretize_matches_definition():
    values = np.array([[0.0], [0.5], [0.96], [1.0]])
    # 20 bins of width 0.05 on [0, 1]: 0.96 in bin 20, the max also in 20.
    np.testing.assert_array_equal(metrics.histogram_discretize(values)[:, 0],
                                  [1, 11, 20, 20])


def test_mutual_info_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    factors = _uniform(rng, 800)
    code = _perfect_code(factors, rng) @ _ROTATION
    binned = metrics.histogram_discretize(code)
    ours = metrics.discrete_mutual_info(binned, factors)
    theirs = np.array([[mutual_info_score(factors[:, k], binned[:, d])
                        for k in range(3)] for d in range(5)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(metrics.discrete_entropy(factors),
                               [mutual_info_score(f, f) for f in factors.T])
    # MIG written out with sklearn's MI, independently of ours.
    top = np.sort(theirs, axis=0)[::-1]
    entropy = [mutual_info_score(f, f) for f in factors.T]
    assert metrics.mutual_info_gap(code, factors) == pytest.approx(
        np.mean((top[0] - top[1]) / entropy), abs=1e-12)


# ---------------------------------------------------------------- modularity
def test_modularity_exact_values():
    factors = _grid((4, 3, 5), repeats=10)
    assert metrics.modularity(factors * 1.0, factors) == pytest.approx(1.0)
    # Dim 0 carries f1 and f2: delta = log(3)^2 / (2 log(4)^2).
    merged = np.stack([factors[:, 0] * 3 + factors[:, 1], factors[:, 2]],
                      axis=1).astype(float)
    expected = np.mean([1 - np.log(3) ** 2 / (2 * np.log(4) ** 2), 1.0])
    assert metrics.modularity(merged, factors) == pytest.approx(expected,
                                                                abs=1e-12)
    # A dim with no information at all scores 0.
    assert metrics.modularity_from_mutual_info([[0.0, 0.0], [1.0, 0.0]]) == 0.5


def test_modularity_drops_under_rotation():
    rng = np.random.default_rng(2)
    factors = _uniform(rng, 3000, sizes=(4, 4, 4, 4))
    code = factors.astype(float)
    pairs = np.kron(np.eye(2), np.array([[1, 1], [1, -1]]) / np.sqrt(2))
    assert metrics.modularity(code, factors) > 0.99
    # Each dim now holds two factors equally: delta = 1/3.
    assert metrics.modularity(code @ pairs, factors) == pytest.approx(2 / 3,
                                                                      abs=0.03)
    mi = metrics.discrete_mutual_info(metrics.histogram_discretize(code @ pairs),
                                      factors)
    squared = mi ** 2
    theta = squared.max(axis=1)
    by_hand = np.mean(1 - (squared.sum(axis=1) - theta) / (theta * 3))
    assert metrics.modularity(code @ pairs, factors) == pytest.approx(by_hand)


# ---------------------------------------------------------------- SAP
def test_sap_exact_on_binary_factors():
    factors = _grid((2, 2), repeats=100)
    code = factors.astype(float)
    # Each dim classifies its own factor perfectly and the other at chance.
    assert metrics.sap_score(code, factors, code, factors) == pytest.approx(0.5)
    # R^2 is 1 for its own factor and exactly 0 for the other on the grid.
    assert metrics.sap_score(code, factors, code, factors,
                             continuous_factors=True) == pytest.approx(1.0)
    shuffled = np.stack([code[:, 1], code[:, 1]], axis=1)
    assert metrics.sap_score(shuffled, factors, shuffled, factors) == 0.0


def test_sap_perfect_beats_rotated():
    rng = np.random.default_rng(3)
    factors, test_factors = _uniform(rng, 1500), _uniform(rng, 500)
    code, test_code = (_perfect_code(f, rng) for f in (factors, test_factors))
    perfect = metrics.sap_score(code, factors, test_code, test_factors)
    rotated = metrics.sap_score(code @ _ROTATION, factors,
                                test_code @ _ROTATION, test_factors)
    assert perfect > 0.3 and rotated < perfect - 0.2


# ---------------------------------------------------------------- DCI
def test_dci_closed_form_on_importance_matrices():
    assert dci_lib.disentanglement(np.eye(3)) == pytest.approx(1.0)
    assert dci_lib.disentanglement(np.ones((3, 3))) == pytest.approx(0.0)
    importance = np.array([[1.0, 1.0], [0.0, 2.0]])
    # Rows: (1/2, 1/2) has base-2 entropy 1, (0, 1) has 0; weights 1/2, 1/2.
    assert dci_lib.disentanglement(importance) == pytest.approx(0.5)
    h = -(1 / 3 * np.log2(1 / 3) + 2 / 3 * np.log2(2 / 3))
    assert dci_lib.completeness(importance) == pytest.approx(
        0.25 * 1.0 + 0.75 * (1 - h), abs=1e-9)


def test_dci_perfect_vs_rotated_code():
    rng = np.random.default_rng(4)
    factors, test_factors = _uniform(rng, 600), _uniform(rng, 300)
    code, test_code = (_perfect_code(f, rng) for f in (factors, test_factors))
    perfect = dci_lib.dci(code, factors, test_code, test_factors)
    assert perfect["disentanglement"] > 0.95
    assert perfect["completeness"] > 0.95
    assert perfect["informativeness_test"] == pytest.approx(1.0)
    rotated = dci_lib.dci(code @ _ROTATION, factors, test_code @ _ROTATION,
                          test_factors)
    assert rotated["disentanglement"] < 0.6
    assert rotated["completeness"] < 0.6


# ---------------------------------------------------------------- BetaVAE, FactorVAE
def test_intervention_scores_perfect_code():
    rng = np.random.default_rng(5)
    beta = interventions.beta_vae_score(GROUND_TRUTH, _perfect_fn, rng,
                                        num_train=300, num_eval=150)
    factor = interventions.factor_vae_score(
        GROUND_TRUTH, _perfect_fn, rng, num_train=300, num_eval=150,
        num_variance_estimate=1000)
    assert beta == {"train_accuracy": 1.0, "eval_accuracy": 1.0}
    assert factor["train_accuracy"] == factor["eval_accuracy"] == 1.0
    assert factor["num_active_dims"] == 5


def test_factor_vae_with_an_unencoded_factor_scores_seven_ninths():
    # Code: f0, f1 and one noise dim. Fixing f2 leaves every dim's variance
    # ratio near 1, so its votes spread over the 3 dims; the noise dim gets
    # only f2's votes: accuracy = 1/3 + 1/3 + 1/9 = 7/9 in expectation.
    def two_of_three(observations):
        noise = np.random.default_rng(int(observations.sum())).normal(
            size=(len(observations), 1))
        return np.concatenate([observations[:, :2], noise], axis=1)
    score = interventions.factor_vae_score(
        GROUND_TRUTH, two_of_three, np.random.default_rng(6), num_train=900,
        num_eval=900, num_variance_estimate=1000)
    assert score["eval_accuracy"] == pytest.approx(7 / 9, abs=0.05)


def test_factor_vae_prunes_collapsed_dims():
    def collapsed(observations):
        return np.concatenate([observations, np.full((len(observations), 1),
                                                     0.01)], axis=1)
    rng = np.random.default_rng(7)
    score = interventions.factor_vae_score(
        GROUND_TRUTH, collapsed, rng, num_train=100, num_eval=50,
        num_variance_estimate=500)
    assert score["num_active_dims"] == 3 and score["eval_accuracy"] == 1.0
    none = interventions.factor_vae_score(
        GROUND_TRUTH, lambda o: np.zeros((len(o), 2)), rng, num_train=10,
        num_eval=10, num_variance_estimate=100)
    assert none == {"train_accuracy": 0.0, "eval_accuracy": 0.0,
                    "num_active_dims": 0}


def test_sample_representation_shapes_and_determinism():
    first = metrics.sample_representation(GROUND_TRUTH, _perfect_fn, 50,
                                          np.random.default_rng(8))
    second = metrics.sample_representation(GROUND_TRUTH, _perfect_fn, 50,
                                           np.random.default_rng(8))
    assert first[0].shape == (50, 5) and first[1].shape == (50, 3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[0][:, :3], 2.0 * first[1] + 1.0)


# ---------------------------------------------------------------- bad input
def _good():
    rng = np.random.default_rng(9)
    factors = _uniform(rng, 200)
    return _perfect_code(factors, rng), factors


def test_nan_representation_names_the_dims():
    code, factors = _good()
    code[5, 3] = np.nan
    for fn in (metrics.mutual_info_gap, metrics.modularity):
        with pytest.raises(ValueError, match=r"representation has NaN in dims \[3\]"):
            fn(code, factors)
    with pytest.raises(ValueError, match=r"representation has NaN in dims \[3\]"):
        dci_lib.dci(code, factors, code, factors)


def test_constant_factor_is_named():
    code, factors = _good()
    factors[:, 2] = 4
    with pytest.raises(ValueError, match=r"factor 2 \(orientation\) is constant"):
        metrics.mutual_info_gap(code, factors,
                                factor_names=("shape", "scale", "orientation"))
    with pytest.raises(ValueError, match=r"factor 2 \(factor 2\) is constant"):
        dci_lib.dci(code, factors, code, factors)


def test_mismatched_lengths_and_wrong_ndim():
    code, factors = _good()
    with pytest.raises(ValueError, match="representation has 199 rows but factors has 200"):
        metrics.mutual_info_gap(code[1:], factors)
    with pytest.raises(ValueError, match=r"representation must be 2-D .* got shape \(200,\)"):
        metrics.modularity(code[:, 0], factors)
    with pytest.raises(ValueError, match=r"test representation has 10 rows"):
        metrics.sap_score(code, factors, code[:10], factors)
    with pytest.raises(ValueError, match="must return"):
        interventions.beta_vae_score(GROUND_TRUTH, lambda o: o[:, 0],
                                     np.random.default_rng(0), num_train=2,
                                     num_eval=2)
