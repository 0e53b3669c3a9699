"""One declaration per option: a config field carries everything a command derives from it.

A config is a frozen dataclass whose fields are declared with `option(...)`: the type is
the field's annotation; the declaration adds the default, the allowed values, a range
check, the help text and, where a command spells it differently, the flag. From that
declaration

  * `define_flags(Config)` defines a command's absl flags (list-valued fields become
    comma-separated list flags, or repeatable ones that also take comma lists),
  * `values_from_flags(Config)` reads the parsed flags back as field values,
  * `check_options(config)` checks every value against its choices and range,

so adding an option is one field. Checks raise `ConfigError`, whose message names the
option by its field; a command re-spells it as its flag (`ConfigError.render`), so the
library never names a flag and the user still reads `--lambda`, not `lam`.
"""
import dataclasses
import typing
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from absl import flags

from csa_tf.errors import CsaInputError

# The problem with a value, or None when it is fine (e.g. "must be >= 0").
Check = Callable[[Any], Optional[str]]

# The flags `define_flags` defines belong to the command that calls it (its --helpshort
# and --helpfull list them), as absl intends for modules that define flags for others.
flags.disclaim_key_flags()

_METADATA_KEY = "csa_tf.option"
_SAME = object()  # The flag is named like the field / its default is the field's.


class ConfigError(CsaInputError):
  """A config value that is out of range or conflicts with another; names the options.

  The message is a template whose placeholders named in `fields` stand for options:
  str() spells them as field names ("lam=-1.0: must be >= 0"), `render(spell)` as the
  caller spells them (a command: "--lambda=-1.0: must be >= 0").

  Attributes:
    field: the option at fault.
    fields: every option the message names, `field` first.
  """

  def __init__(self, template: str, *fields: str, **values):
    self.template = template
    self.fields = fields
    self.field = fields[0]
    self.values = values
    super().__init__(self.render(lambda name: name))

  def render(self, spell: Callable[[str], str]) -> str:
    """The message with each option named by spell(field name)."""
    return self.template.format(**{f: spell(f) for f in self.fields}, **self.values)


@dataclasses.dataclass(frozen=True)
class Option:
  """What a field declares beyond its name and type; see `option`."""
  help: str
  choices: Optional[Tuple[Any, ...]] = None
  check: Optional[Check] = None
  flag: Any = _SAME
  inverse_flag: bool = False
  flag_default: Any = _SAME
  parse: Optional[Callable[[Any], Any]] = None
  unparse: Optional[Callable[[Any], Any]] = None
  on_resume: bool = False
  repeatable: bool = False


def option(default=dataclasses.MISSING, *, help: str,  # pylint: disable=redefined-builtin
           choices: Optional[Sequence[Any]] = None, check: Optional[Check] = None,
           flag: Any = _SAME, inverse_flag: bool = False, flag_default: Any = _SAME,
           parse: Optional[Callable[[Any], Any]] = None,
           unparse: Optional[Callable[[Any], Any]] = None, on_resume: bool = False,
           repeatable: bool = False):
  """A dataclass field declared once: default, allowed values, check and help text.

  Args:
    default: the field's default; omitted for a field every config must be given.
    help: what the option does, shown as the flag's help.
    choices: the allowed values (a str field with choices becomes an enum flag).
    check: returns the problem with a value (e.g. `positive_integer`), or None.
    flag: the flag's name when it differs from the field's (`lam` is --lambda); None
      for a field that is not a flag (facts read from the prepared data).
    inverse_flag: a bool flag that means `not field` (--all_slices sets
      labelled_slices_only False).
    flag_default: the flag's default when it differs from the field's (a required
      field's optional flag, or an empty list that a command resolves).
    parse: turns the flag's value into the field's (after the list flag is split).
    unparse: turns a field value into the flag's (its default, for the help).
    on_resume: the value may change when a run is resumed (how long, how often to log
      or checkpoint, where it runs); False: resuming with another value is refused.
    repeatable: a list field's flag may be given several times, each time with one
      item or a comma list (`--f=a:1 --f=b:2` is `--f=a:1,b:2`).
  """
  meta = Option(help=help, choices=None if choices is None else tuple(choices),
                check=check, flag=flag, inverse_flag=inverse_flag,
                flag_default=flag_default, parse=parse, unparse=unparse,
                on_resume=on_resume, repeatable=repeatable)
  kwargs = {"metadata": {_METADATA_KEY: meta}}
  if isinstance(default, (list, dict, set)):
    raise TypeError("option defaults must be immutable (use a tuple)")
  if default is not dataclasses.MISSING:
    kwargs["default"] = default
  return dataclasses.field(**kwargs)


def declarations(config_class) -> Dict[str, Tuple[dataclasses.Field, Option]]:
  """{field name: (field, Option)} of every field declared with `option`, in order."""
  return {f.name: (f, f.metadata[_METADATA_KEY]) for f in dataclasses.fields(config_class)
          if _METADATA_KEY in f.metadata}


def flag_name(config_class, field: str) -> Optional[str]:
  """The flag that sets `field`, or None when the field is not a flag."""
  decl = declarations(config_class)[field][1]
  return field if decl.flag is _SAME else decl.flag


def flag_default(config_class, field: str):
  """The default of `field`'s flag, as the flag holds it (a list for list flags)."""
  f, decl = declarations(config_class)[field]
  if decl.flag_default is not _SAME:
    value = decl.flag_default
  elif f.default is not dataclasses.MISSING:
    value = f.default
  else:
    value = None
  if value is None:
    return None
  if decl.inverse_flag:
    return not value
  if decl.unparse is not None:
    value = decl.unparse(value)
  return list(value) if _is_sequence(f.type) else value


def define_flags(config_class, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one absl flag per flag field of config_class, from its declaration."""
  for name, (f, decl) in declarations(config_class).items():
    flag = flag_name(config_class, name)
    if flag is None:
      continue
    default = flag_default(config_class, name)
    kind = _base_type(f.type)
    kwargs = dict(name=flag, default=default, help=decl.help, flag_values=flag_values)
    if _is_sequence(f.type) and decl.repeatable:
      flags.DEFINE_multi_string(**kwargs)
    elif _is_sequence(f.type):
      flags.DEFINE_list(**kwargs)
    elif kind is bool:
      flags.DEFINE_bool(**kwargs)
    elif kind is int:
      flags.DEFINE_integer(**kwargs)
    elif kind is float:
      flags.DEFINE_float(**kwargs)
    elif kind is str and decl.choices is not None:
      flags.DEFINE_enum(enum_values=list(decl.choices), **kwargs)
    elif kind is str:
      flags.DEFINE_string(**kwargs)
    else:
      raise TypeError(f"{config_class.__name__}.{name}: no flag kind for {f.type}")


def values_from_flags(config_class,
                      flag_values: flags.FlagValues = flags.FLAGS) -> Dict[str, Any]:
  """{field name: value} of every flag field, read from the parsed flags.

  Raises:
    ConfigError: a flag value that its field's `parse` refuses.
  """
  values = {}
  for name, (f, decl) in declarations(config_class).items():
    flag = flag_name(config_class, name)
    if flag is None:
      continue
    value = flag_values[flag].value
    if decl.repeatable and value is not None:
      value = [item.strip() for entry in value for item in entry.split(",")
               if item.strip()]
    if decl.inverse_flag:
      value = not value
    elif value is not None and decl.parse is not None:
      value = decl.parse(value)
    elif value is not None and _is_sequence(f.type):
      value = tuple(value)
    values[name] = value
  return values


def flag_spelling(*config_classes) -> Callable[[str], str]:
  """Returns spell(field) -> "--flag" for `ConfigError.render`, first class first.

  A field that is no class's flag keeps its name (a fact read from the data, say).
  """
  names = {}
  for config_class in reversed(config_classes):
    for field in declarations(config_class):
      flag = flag_name(config_class, field)
      if flag is not None:
        names[field] = f"--{flag}"
  return lambda field: names.get(field, field)


def check_options(config) -> None:
  """Checks each declared field of `config` against its choices and its check.

  Raises:
    ConfigError: the first field whose value is not allowed.
  """
  for name, (_, decl) in declarations(type(config)).items():
    value = getattr(config, name)
    if decl.choices is not None and value not in decl.choices:
      raise ConfigError(
          "{%s}={value}: unknown {noun}; expected one of {allowed}" % name, name,
          value=value, noun=name.replace("_", " "),
          allowed=", ".join(map(str, decl.choices)))
    problem = decl.check(value) if decl.check is not None else None
    if problem:
      raise ConfigError("{%s}={value}: {problem}" % name, name, value=value,
                        problem=problem)


# Checks shared by the configs; each returns the problem, as `Check` says.
def positive_integer(value) -> Optional[str]:
  return None if value >= 1 else "must be a positive integer"


def at_least(low: int) -> Check:
  """A check for value >= low (integer fields: their type is checked by the flags)."""
  def check(value) -> Optional[str]:
    return None if value >= low else f"must be at least {low}"
  return check


def positive(value) -> Optional[str]:
  return None if value > 0 else "must be positive"


def non_negative(value) -> Optional[str]:
  return None if value >= 0 else "must be >= 0"


def in_interval(low: float, high: float, *, low_open: bool, high_open: bool) -> Check:
  """A check for low < value (or <=) and value < high (or <=); NaN is never inside."""
  text = (f"must be in {'(' if low_open else '['}{low:g}, {high:g}"
          f"{')' if high_open else ']'}")

  def check(value) -> Optional[str]:
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    return None if above and below else text
  return check


def _base_type(annotation):
  """int for int, str for Optional[str], tuple for Tuple[...]."""
  origin = typing.get_origin(annotation)
  if origin is typing.Union:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _base_type(args[0]) if len(args) == 1 else annotation
  return origin or annotation


def _is_sequence(annotation) -> bool:
  return _base_type(annotation) is tuple

