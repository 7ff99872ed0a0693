"""Metrics of a trained VMI-VAE on the test split, one job per module:

* ``common``: the evaluation's keys, batching, eval-mode decoding (and the conventions);
* ``likelihood``: per-example ELBO terms (:func:`vae_statistics`) and the IWAE estimate
  of log p(x) (:func:`iwae_log_likelihood`, Burda et al.);
* ``mi_bound``: the Barber-Agakov bound of thesis eq 4.8 with a Q trained from scratch on
  the frozen VAE (:func:`train_fresh_q`, :func:`mi_bounds`, :func:`fresh_q_mi_bound`);
* ``clustering``: accuracies, NMI and ARI of the categorical code (numpy; no sklearn);
* ``latent_usage``: active units and each Gaussian dim's influence on x';
* ``figure_data``: the arrays behind the figures, and their PNGs;
* ``run``: :func:`evaluate_workdir`, composing them for a train.py workdir.

The public functions are re-exported here: ``evaluation.accuracy_hungarian(...)``.
Importing this package imports JAX and the model but not matplotlib (figures only
when written).
"""

from vmivae_jax.evaluation.clustering import accuracy_hungarian
from vmivae_jax.evaluation.clustering import accuracy_majority
from vmivae_jax.evaluation.clustering import adjusted_rand_index
from vmivae_jax.evaluation.clustering import count_matrix
from vmivae_jax.evaluation.clustering import normalized_mutual_information
from vmivae_jax.evaluation.common import decode_mean
from vmivae_jax.evaluation.common import eval_keys
from vmivae_jax.evaluation.common import local_model
from vmivae_jax.evaluation.figure_data import figure_arrays
from vmivae_jax.evaluation.figure_data import traversal_dims
from vmivae_jax.evaluation.latent_usage import ACTIVE_UNIT_THRESHOLD
from vmivae_jax.evaluation.latent_usage import active_units
from vmivae_jax.evaluation.latent_usage import INFLUENCE_DELTA
from vmivae_jax.evaluation.latent_usage import latent_influence
from vmivae_jax.evaluation.likelihood import iwae_batch_size
from vmivae_jax.evaluation.likelihood import iwae_log_likelihood
from vmivae_jax.evaluation.likelihood import vae_statistics
from vmivae_jax.evaluation.mi_bound import categorical_entropy_of_mean
from vmivae_jax.evaluation.mi_bound import fresh_q_mi_bound
from vmivae_jax.evaluation.mi_bound import gaussian_aggregate_entropy
from vmivae_jax.evaluation.mi_bound import init_q
from vmivae_jax.evaluation.mi_bound import MI_BOUND_NOTE
from vmivae_jax.evaluation.mi_bound import mi_bounds
from vmivae_jax.evaluation.mi_bound import mi_bounds_from_statistics
from vmivae_jax.evaluation.mi_bound import train_fresh_q
from vmivae_jax.evaluation.run import evaluate_workdir
