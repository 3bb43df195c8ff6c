"""The sampling flags of every command that generates notes (mars-sample, mars-evaluate, mars-report,
the generation benchmarks), made from the families' sampling-options dataclasses.

The options every family shares (SamplingOptions: --cfg, --top-k, --top-p, --temperature) form one
group; each family's own options (MaskGIT's --iterations, ...) form a group named after the family.
A value is checked when the command line is parsed (before anything is loaded); which family it is
for is known once the export is loaded (`options_for`), and a flag the loaded family does not take
is then an error naming the family's own flags. `families_for_help` lets `--model EXPORT --help` also
list the flags of a family defined outside the package.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from mars_dist.models.generators.family import GeneratorFamily, known_families
from mars_dist.models.generators.options import SamplingOptions, flag_of


def _value_type(cls: type, name: str) -> type:
    """int / float / str of a (possibly Optional) dataclass field, from its resolved type hint."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _fields(cls: type, after: type = object) -> List[dataclasses.Field]:
    inherited = {f.name for f in dataclasses.fields(after)} if dataclasses.is_dataclass(after) else set()
    return [f for f in dataclasses.fields(cls) if f.name not in inherited]


def families_for_help(argv: Optional[Sequence[str]], model_flags: Sequence[str] = ("--model",)) -> List[GeneratorFamily]:
    """The known families, plus the family of the export named by `model_flags` in `argv` when it is
    readable (a wrong path is reported later, by the command itself)."""
    from mars_dist.generation.loaders import family_of_export

    families = known_families()
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument(*model_flags, dest="model")
    model = probe.parse_known_args(argv)[0].model
    if model:
        try:
            extra = family_of_export(Path(model))
        except Exception:  # the command reports an unreadable export itself, with its own message
            extra = None
        if extra is not None and extra not in families:
            families.append(extra)
    return families


def add_sampling_arguments(parser: argparse.ArgumentParser, families: Sequence[GeneratorFamily]) -> None:
    """The sampling flags every family shares, and each family's own."""
    added: Dict[str, dataclasses.Field] = {}
    groups = [("sampling (every generator family)", SamplingOptions, _fields(SamplingOptions))]
    groups += [(f"sampling ({spec.key} only)", spec.options_class, _fields(spec.options_class, SamplingOptions))
               for spec in families]
    for title, cls, fields in groups:
        new = [f for f in fields if f.name not in added]
        if not new:
            continue
        group = parser.add_argument_group(title)
        defaults = cls()
        for f in new:
            default = getattr(defaults, f.name)
            shown = "the export's" if default is None else default
            group.add_argument(flag_of(f), dest=f.name, type=_value_type(cls, f.name), default=None,
                               help=f"{f.metadata.get('help', '')} (default: {shown})")
            added[f.name] = f
    parser.set_defaults(_sampling_fields=added)


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """--compile and --int8 (FamilyGenerator.compile / .int8)."""
    speed = parser.add_argument_group("speed")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the transformer (the first batch compiles, tens of seconds on a CPU; "
                            "pays off from a few dozen notes)")
    speed.add_argument("--int8", action="store_true",
                       help="CPU: int8 weights and activations in the transformer's and the tokenizer decoder's "
                            "matmuls (~2x the bf16 GEMM rate; a measured, small change of the notes: docs/ar.md); "
                            "needs a C++ compiler, like --compile")


def given_sampling_values(args: argparse.Namespace) -> Dict[str, Any]:
    """{field: value} of the sampling flags given on the command line."""
    return {name: getattr(args, name) for name in args._sampling_fields if getattr(args, name) is not None}


def check_sampling_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses a value no family accepts (`--top-p 1.5`), as the parser's error (exit 2)."""
    for name, value in given_sampling_values(args).items():
        f = args._sampling_fields[name]
        problem = f.metadata["check"](value) if f.metadata.get("check") else None
        if problem:
            parser.error(f"{flag_of(f)} {value}: {problem}")


def options_for(spec: GeneratorFamily, args: argparse.Namespace, **defaults: Any) -> SamplingOptions:
    """The loaded family's options: its defaults, then `defaults` (a command's own), then the flags;
    a flag the family does not take is a UserValueError naming the family's flags."""
    from mars_dist.errors import UserValueError

    own = {f.name for f in dataclasses.fields(spec.options_class)}
    given = given_sampling_values(args)
    foreign = sorted(set(given) - own)
    if foreign:
        flags = ", ".join(flag_of(args._sampling_fields[n]) for n in foreign)
        raise UserValueError(f"{flags}: not an option of the {spec.key} family (its sampling flags: "
                             f"{', '.join(flag_of(f) for f in dataclasses.fields(spec.options_class))})")
    options = spec.options_class(**{**defaults, **given})
    options.validate()
    return options


def shared_options(spec: GeneratorFamily, args: argparse.Namespace) -> SamplingOptions:
    """The family's options with the given flags it takes applied, the others ignored: for commands
    that sample several families at once (the benchmarks' comparisons)."""
    own = {f.name for f in dataclasses.fields(spec.options_class)}
    options = spec.options_class(**{k: v for k, v in given_sampling_values(args).items() if k in own})
    options.validate()
    return options
