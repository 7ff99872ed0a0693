"""The train step of a sweep: ``train_step``'s step over members (vmapped or looped), compiled once.

Per member (the vmapped axis, leading every array): parameters, BatchNorm statistics,
optimizer states, the step and data keys (from the member's seed) and :class:`HParams`,
the numbers ``config.sweep`` may vary, as traced float32 arrays instead of the Python
constants a single run bakes into its program. Shared: the static step configuration
(``StepStatics`` with the swept numbers replaced by placeholders, so sweeps that differ
only in values share one compiled program), the step counter (members train in
lockstep, so the epoch's permutation is a real ``cond``, not a per-member select) and
the on-device training set.

Data parallelism composes as in ``train_step``: ``shard_map`` over 'data' outside, the
member vmap inside; every device runs every member on its slice of the batch.

Learning rates: every optimizer of this repository ends with ``scale_by_learning_rate``
(adam, adamw, sgd, rmsprop; gradient clipping comes first), so a member's optimizer is
the config's optimizer built with learning rate 1 followed by a multiplication by the
member's rate: the optimizer state has the single run's structure (checkpoints are
interchangeable) and the update is ``(-u) * lr == -(lr * u)``, exactly the single run's.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vmivae_jax.model import networks
from vmivae_jax.model import objectives
from vmivae_jax.model import vmi as model_lib
from vmivae_jax.train import train_state as train_state_lib
from vmivae_jax.train import train_step
from vmivae_jax.util import parallel

TrainState = train_state_lib.TrainState


@flax.struct.dataclass
class HParams:
  """One member's swept numbers (float32 scalars; [members] when stacked).

  ``capacity`` follows ``StepStatics.objective.weights.capacity`` (groups with a capacity
  target): (gamma, max_nats, steps) each. Invariance weights of terms that are off for
  every member are not used (the static zero keeps the term out of the program).
  """
  mi_weight: jax.Array
  beta: jax.Array
  vae_learning_rate: jax.Array
  q_learning_rate: jax.Array
  temperature_initial: jax.Array
  temperature_floor: jax.Array
  temperature_anneal_rate: jax.Array
  capacity: tuple[tuple[jax.Array, jax.Array, jax.Array], ...]
  consistency_weight: jax.Array
  paired_mi_weight: jax.Array
  vat_weight: jax.Array

  def apply(self, cfg: train_step.StepStatics) -> train_step.StepStatics:
    """``cfg`` with its swept numbers replaced by this member's (inside the trace)."""
    objective = cfg.objective
    capacity = tuple(
        (group, objectives.Capacity(gamma=gamma, max_nats=max_nats, steps=steps))
        for (group, _), (gamma, max_nats, steps) in zip(objective.weights.capacity,
                                                         self.capacity))
    weights = dataclasses.replace(objective.weights, mi_weight=self.mi_weight, beta=self.beta,
                                  capacity=capacity)
    inv = objective.invariance
    inv = dataclasses.replace(inv, **{
        name: getattr(self, name) for name in ('consistency_weight', 'paired_mi_weight',
                                               'vat_weight') if getattr(inv, name) > 0})
    temperature = dataclasses.replace(cfg.temperature, initial=self.temperature_initial,
                                      floor=self.temperature_floor,
                                      anneal_rate=self.temperature_anneal_rate)
    return dataclasses.replace(
        cfg, objective=dataclasses.replace(objective, weights=weights, invariance=inv),
        temperature=temperature)

  def scale_vae_updates(self, updates):
    return jax.tree.map(lambda u: u * self.vae_learning_rate, updates)

  def scale_q_updates(self, updates):
    return jax.tree.map(lambda u: u * self.q_learning_rate, updates)


def hparams_of(statics: train_step.StepStatics, *, vae_learning_rate: float,
               q_learning_rate: float) -> HParams:
  """A member's HParams from its own (single-run) step statics and learning rates."""
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  w, inv, t = statics.objective.weights, statics.objective.invariance, statics.temperature
  return HParams(
      mi_weight=f32(w.mi_weight), beta=f32(w.beta), vae_learning_rate=f32(vae_learning_rate),
      q_learning_rate=f32(q_learning_rate), temperature_initial=f32(t.initial),
      temperature_floor=f32(t.floor), temperature_anneal_rate=f32(t.anneal_rate),
      capacity=tuple((f32(c.gamma), f32(c.max_nats), f32(c.steps)) for _, c in w.capacity),
      consistency_weight=f32(inv.consistency_weight),
      paired_mi_weight=f32(inv.paired_mi_weight), vat_weight=f32(inv.vat_weight))


def stack(trees):
  """Stacks member pytrees along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def stack_states(states: list[TrainState]) -> TrainState:
  """Member states -> one state with a leading member axis (the step shared)."""
  steps = {int(s.step) for s in states}
  if len(steps) != 1:
    raise ValueError(f'members at different steps {sorted(steps)}: a sweep trains in lockstep')
  stacked = stack([s.replace(step=jnp.zeros((), jnp.int32)) for s in states])
  return stacked.replace(step=jnp.asarray(states[0].step, jnp.int32))


def member_state(state: TrainState, i: int) -> TrainState:
  """Member ``i``'s state (a single run's TrainState) out of a stacked one."""
  fields = {f.name: jax.tree.map(lambda x: x[i], getattr(state, f.name))
            for f in dataclasses.fields(state) if f.name != 'step'}
  return state.replace(**fields)


def _with_member_axis(state: TrainState) -> TrainState:
  """A single run's state as a 1-member stacked one (inverse of ``member_state(., 0)``)."""
  fields = {f.name: jax.tree.map(lambda x: x[None], getattr(state, f.name))
            for f in dataclasses.fields(state) if f.name != 'step'}
  return state.replace(**fields)


def _state_axes(state: TrainState):
  return jax.tree.map(lambda _: 0, state.replace(step=None))


def _set_member(state: TrainState, i, member: TrainState) -> TrainState:
  """``state`` with member ``i`` replaced by ``member`` (the shared step left as it is)."""
  fields = {f.name: jax.tree.map(lambda x, y: x.at[i].set(y), getattr(state, f.name),
                                 getattr(member, f.name))
            for f in dataclasses.fields(state) if f.name != 'step'}
  return state.replace(**fields)


MEMBER_STRATEGIES = ('auto', 'vmap', 'loop')


def member_strategy(cfg: train_step.StepStatics, strategy: str = 'auto') -> str:
  """How a sweep runs its members: 'vmap' (one batched program) or 'loop' (a lax.scan
  over members, each running the single run's program).

  'auto' loops for conv families on CPU: vmapped convolutions become grouped
  convolutions, which XLA:CPU runs far slower than M plain ones (a 2-member sweep of the
  dlib_conv step cost 1.64x two plain steps; benchmarks/README.md, sweep section). Dense
  layers batch well on every backend, and on GPU/TPU the batched program fills the chip.
  """
  if strategy not in MEMBER_STRATEGIES:
    raise ValueError(f'sweep member strategy {strategy!r}; choose from {MEMBER_STRATEGIES}')
  if strategy != 'auto':
    return strategy
  conv = cfg.model.vae.decoder.family in networks.CONV_FAMILIES
  return 'loop' if conv and jax.default_backend() == 'cpu' else 'vmap'


def make_sweep_chunk(cfg: train_step.StepStatics, mesh: jax.sharding.Mesh, num_steps: int, *,
                     vmap_one_member: bool = False,
                     members: str = 'auto') -> Callable[..., tuple[TrainState, dict]]:
  """A jitted function running ``num_steps`` steps of every member (one lax.scan).

  Signature: ``(state, images_uint8, step_keys, data_keys, hparams) -> (state, metrics)``,
  ``state`` stacked (:func:`stack_states`; donated), keys ``[M, 2]``, ``hparams``
  stacked :class:`HParams`, ``metrics`` a dict of ``[M, num_steps]`` arrays.
  ``cfg`` must be the sweep's placeholder statics (``build.build_sweep``): its swept
  numbers are ignored.

  One member is run without vmap (its arrays indexed out, the results given back their
  member axis). vmap over a size-1 axis computes the same numbers, but the VJP of a
  batched ``dot_general`` gives each weight gradient as a [members, out, in] product and
  a transpose. With several members XLA:CPU folds the transpose into the batched matmul;
  with one it drops the size-1 batch dimension of the matmul and keeps the transpose, in
  the Adam update that reads the gradient (20 such transposes in the MLP MI step): ~1.4x
  the plain step's time at batch 64 (benchmarks/README.md, sweep section).
  ``vmap_one_member=True`` keeps that program (for the benchmark's before/after).
  Several members are vmapped or looped over as :func:`member_strategy` says
  (``members``); a looped member runs the single run's program on its slice of the
  stacked state, updated in place.
  """
  strategy = member_strategy(cfg, members)
  local_batch = parallel.local_batch_size(cfg.batch_size, mesh)
  axis_name = parallel.axis_name_for(mesh)
  if axis_name is None:
    cfg = dataclasses.replace(cfg, model=model_lib.local_model(cfg.model))

  def member_chunk(state, images, step_key, data_key, hparams):
    return train_step.run_steps(cfg, local_batch, axis_name, num_steps, state, step_key,
                                (images, data_key), feed='device', hparams=hparams)

  def chunk(state, images, step_keys, data_keys, hparams):
    if step_keys.shape[0] == 1 and not vmap_one_member:   # the single run's program
      first = lambda tree: jax.tree.map(lambda x: x[0], tree)
      state, metrics = member_chunk(member_state(state, 0), images, step_keys[0],
                                    data_keys[0], first(hparams))
      return _with_member_axis(state), jax.tree.map(lambda x: x[None], metrics)
    if strategy == 'loop':
      def one_member(stacked, i):
        take = lambda tree: jax.tree.map(lambda x: x[i], tree)
        member, metrics = member_chunk(member_state(stacked, i), images, step_keys[i],
                                       data_keys[i], take(hparams))
        return _set_member(stacked, i, member), (metrics, member.step)
      state, (metrics, steps) = jax.lax.scan(one_member, state,
                                             jnp.arange(step_keys.shape[0]))
      return state.replace(step=steps[-1]), metrics
    axes = _state_axes(state)
    return jax.vmap(member_chunk, in_axes=(axes, None, 0, 0, 0), out_axes=(axes, 0))(
        state, images, step_keys, data_keys, hparams)

  if axis_name is None:
    return jax.jit(chunk, donate_argnums=(0,))
  sharded = jax.shard_map(chunk, mesh=mesh, in_specs=(P(),) * 5, out_specs=(P(), P()))
  return jax.jit(sharded, donate_argnums=(0,))


@functools.lru_cache(maxsize=None)
def cached_sweep_chunk(cfg: train_step.StepStatics, mesh: jax.sharding.Mesh, num_steps: int):
  """make_sweep_chunk, built once per (placeholder statics, mesh, length) in a process."""
  return make_sweep_chunk(cfg, mesh, num_steps)
