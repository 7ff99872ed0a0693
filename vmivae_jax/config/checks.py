"""The primitives of config validation: ConfigError and checks that name the key and value.

``validation.validate`` is built from these; each failure raises :class:`ConfigError` with
a message that starts with ``config.<key>=<value>``.
"""

import math
import numbers
from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config value is invalid; the message names the key and the value."""


def fail(key: str, value: Any, why: str):
  raise ConfigError(f'config.{key}={show(value)}: {why}')


def show(value: Any) -> str:
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  text = repr(value)
  return text if len(text) <= 200 else text[:197] + '...'


def is_dict(value: Any) -> bool:
  return isinstance(value, (ml_collections.ConfigDict, dict))


def is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


TYPE_NAMES = {bool: 'a bool (True/False)', int: 'an integer', float: 'a number',
               str: 'a string', tuple: 'a tuple/list'}


def type_ok(expected: type, value: Any) -> bool:
  if expected is bool:
    return isinstance(value, bool)
  if expected is int:
    return is_int(value)
  if expected is float:
    return is_real(value)
  if expected is str:
    return isinstance(value, str)
  if expected is tuple:
    return isinstance(value, (tuple, list))
  return True  # a key whose reference value is None or of another type: anything goes


def is_finite(value) -> bool:
  try:
    return math.isfinite(value)
  except OverflowError:  # an int too large for a float
    return False


def get_key(config, key: str) -> Any:
  value = config
  for part in key.split('.'):
    value = value[part]
  return value


def check_number(config, key: str, *, minimum=None, strict=False, maximum=None):
  """Range check of a number whose type validation has already checked."""
  value = get_key(config, key)
  if minimum is not None and (value <= minimum if strict else value < minimum):
    fail(key, value, f'must be {">" if strict else ">="} {minimum}')
  if maximum is not None and value > maximum:
    fail(key, value, f'must be <= {maximum}')
  return value


def check_choice(config, key: str, choices) -> None:
  value = get_key(config, key)
  if value not in tuple(choices):
    fail(key, value, f'choose one of {tuple(choices)}')


def check_int_items(config, key: str, *, minimum: int, why: str) -> tuple:
  value = tuple(get_key(config, key))
  for i, item in enumerate(value):
    if not is_int(item) or item < minimum:
      fail(f'{key}[{i}]', item, why)
  return value
