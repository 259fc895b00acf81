"""Turning a user's target description into a TVM 0.27 ``Target`` that really targets the CPU.

Why this module exists: TVM 0.27 accepts only JSON-like dicts (the classic
``"llvm -mcpu=native"`` string raises), and when it is given ``mcpu=native`` with the wheel's
default triple (``x86_64-conda-linux-gnu``) LLVM silently falls back to generic x86-64 code: no
AVX2, no FMA, several times slower. :func:`parse_target` accepts the classic string, a JSON
string, a dict or a ``Target``; resolves ``native`` to the host CPU's LLVM name; defaults
``mtriple`` to the plain host triple (``x86_64-linux-gnu`` on x86-64 Linux); and validates
everything, raising :class:`TargetError` with what would be valid. :func:`compile_target` adds
what the compile pipeline needs on top: a kind it can build for (``llvm``: our kernels are CPU
kernels) and a triple of this machine's architecture (the library is linked and loaded here). Both
are cheap (no LLVM code generation), so a compile checks its target before any other work.

The thread-pool functions are re-exported here because a target and the threads that run its
code are chosen together.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Mapping
from typing import Any

import tvm
from tvm.target import Target, TargetKind
from tvm.target import codegen as llvm_codegen

from subp_fx.codegen.errors import TargetError
from subp_fx.codegen.threads import get_num_threads, physical_core_count, set_num_threads

__all__ = [
    "BUILDABLE_KINDS",
    "TargetError",
    "compile_target",
    "get_num_threads",
    "host_cpu_name",
    "host_triple",
    "parse_target",
    "set_num_threads",
]

NATIVE_CPU = "native"

# The target kinds the compile pipeline builds: every kernel is a scheduled CPU kernel compiled by
# LLVM. TVM knows more kinds (cuda, opencl, c, ...), for which our kernels have no schedule.
BUILDABLE_KINDS = ("llvm",)

_FORM_HELP = (
    'A target is written "KIND -OPTION=VALUE ..." (e.g. "llvm", "llvm -mcpu=native", '
    '"llvm -mcpu=znver3 -mattr=+avx2,+fma -num-cores=2"), as a JSON object string '
    '(e.g. \'{"kind": "llvm", "mcpu": "native"}\'), as a dict, or as a tvm.target.Target.'
)

# Host (system, machine) -> the LLVM triple that makes LLVM honour -mcpu. The wheel's own
# default (x86_64-conda-linux-gnu) names a vendor LLVM does not know, and -mcpu=native then
# degrades to generic code.
_HOST_TRIPLES: dict[tuple[str, str], str] = {
    ("Linux", "x86_64"): "x86_64-linux-gnu",
    ("Linux", "aarch64"): "aarch64-linux-gnu",
    ("Darwin", "arm64"): "arm64-apple-darwin",
    ("Darwin", "x86_64"): "x86_64-apple-darwin",
}


def host_triple() -> str:
    """The LLVM triple of this machine, in the form with which ``mcpu`` is honoured."""
    known = _HOST_TRIPLES.get((platform.system(), platform.machine()))
    if known is not None:
        return known
    return str(llvm_codegen.llvm_get_system_triple()).replace("-conda-", "-")


def host_cpu_name() -> str:
    """LLVM's name for this machine's CPU (e.g. ``znver3``), what ``-mcpu=native`` resolves to."""
    return str(tvm.get_global_func("target.llvm_get_system_cpu")())


# LLVM feature -> the /proc/cpuinfo flag that proves it: the instruction sets subp-fx's kernels
# choose between (isa.VectorISA / Int8Path / Bf16Path), checked before a compiled model runs here.
KERNEL_FEATURES = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vnni": "avx512_vnni",
    "avxvnni": "avx_vnni",
    "avx512bf16": "avx512_bf16",
}
CPUINFO = "/proc/cpuinfo"


def host_cpu_flags(cpuinfo: str = CPUINFO) -> frozenset[str] | None:
    """The CPU flags the kernel reports for this machine (``/proc/cpuinfo``), or None where there is
    no such file (not Linux). What a virtual machine really offers: LLVM's host CPU name comes from
    the CPU model and can claim features the hypervisor hides."""
    try:
        with open(cpuinfo) as text:
            for line in text:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return frozenset()


def missing_host_features(target: Target, flags: frozenset[str] | None = None) -> list[str]:
    """The :data:`KERNEL_FEATURES` ``target`` (an x86 LLVM target) compiles for that this machine
    lacks (``flags``: its CPU flags, default :func:`host_cpu_flags`): code built for them would stop
    on an illegal instruction here. Empty where nothing is missing or nothing can be told."""
    flags = host_cpu_flags() if flags is None else flags
    triple = str(target.attrs.get("mtriple", "") or host_triple())
    if flags is None or target.kind.name != "llvm" or not triple.startswith("x86_64"):
        return []
    return [
        feature
        for feature, flag in KERNEL_FEATURES.items()
        if flag not in flags and llvm_codegen.llvm_cpu_has_features(feature, target)
    ]


def _parse_str(option: str, text: str) -> str:
    if not text:
        raise TargetError(f"target option -{option} needs a value, e.g. -{option}=VALUE. {_FORM_HELP}")
    return text


def _parse_int(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise TargetError(f"target option -{option} needs an integer value, got {text!r}. {_FORM_HELP}") from None


_BOOL_WORDS = {"true": True, "1": True, "false": False, "0": False}


def _parse_bool(option: str, text: str) -> bool:
    if text.lower() not in _BOOL_WORDS:
        raise TargetError(f"target option -{option} needs true or false, got {text!r}. {_FORM_HELP}")
    return _BOOL_WORDS[text.lower()]


def _parse_str_list(option: str, text: str) -> list[str]:
    items = [item for item in text.split(",") if item]
    if not items:
        raise TargetError(f"target option -{option} needs a comma-separated list, e.g. -{option}=A,B. {_FORM_HELP}")
    return items


# TVM's option type name -> how to read it from the classic string form.
_CLASSIC_VALUE_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "str": _parse_str,
    "int": _parse_int,
    "bool": _parse_bool,
    "Array<str>": _parse_str_list,
}


def _known_kinds() -> list[str]:
    return sorted(Target.list_kinds())


def _kind_options(kind: str) -> dict[str, str]:
    if kind not in _known_kinds():
        raise TargetError(
            f"unknown target kind {kind!r}; TVM's kinds are {', '.join(_known_kinds())}, of which subp-fx compiles "
            f"for {' and '.join(repr(k) for k in BUILDABLE_KINDS)}. {_FORM_HELP}"
        )
    return {name: str(type_name) for name, type_name in TargetKind.options_from_name(kind).items()}


def _unknown_option(kind: str, option: str, options: Mapping[str, str]) -> TargetError:
    valid = ", ".join(f"-{name}" for name in sorted(options) if name != "kind")
    return TargetError(f"unknown option {option!r} for target kind {kind!r}; valid options are {valid}. {_FORM_HELP}")


def _parse_classic(text: str) -> dict[str, Any]:
    words = text.split()
    kind = words[0]
    if kind.startswith("-"):
        raise TargetError(
            f"the target {text!r} starts with an option; name the kind first, e.g. 'llvm {text}'. {_FORM_HELP}"
        )
    options = _kind_options(kind)
    config: dict[str, Any] = {"kind": kind}
    for word in words[1:]:
        if not word.startswith("-") or word.lstrip("-") == "":
            raise TargetError(f"cannot read {word!r} in target {text!r}: options start with '-'. {_FORM_HELP}")
        name, has_value, value = word.lstrip("-").partition("=")
        if name not in options or name == "kind":
            raise _unknown_option(kind, name, options)
        option_type = options[name]
        if not has_value and option_type == "bool":
            config[name] = True
            continue
        if option_type not in _CLASSIC_VALUE_PARSERS:
            raise TargetError(
                f"target option -{name} (of type {option_type}) cannot be written in the classic form; "
                f"give the target as a JSON object or dict instead. {_FORM_HELP}"
            )
        if not has_value or value == "":
            raise TargetError(f"target option -{name} in {text!r} has no value; write -{name}=VALUE. {_FORM_HELP}")
        config[name] = _CLASSIC_VALUE_PARSERS[option_type](name, value)
    return config


def _config_from(target: str | Mapping[str, Any] | Target) -> dict[str, Any]:
    if isinstance(target, Target):
        return json.loads(json.dumps(dict(target.export()), default=list))
    if isinstance(target, Mapping):
        return dict(target)
    if not isinstance(target, str):
        raise TargetError(
            f"a target must be a string, dict or tvm.target.Target, got {type(target).__name__}. {_FORM_HELP}"
        )
    text = target.strip()
    if not text:
        raise TargetError(f"the target is empty. {_FORM_HELP}")
    if text.startswith("{"):
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise TargetError(f"the target {text!r} is not valid JSON ({error.msg}). {_FORM_HELP}") from None
        if not isinstance(config, dict):
            raise TargetError(f"a JSON target must be an object, got {text!r}. {_FORM_HELP}")
        return config
    return _parse_classic(text)


def _check_config_keys(config: Mapping[str, Any]) -> None:
    if "kind" not in config:
        raise TargetError(f"the target {dict(config)!r} has no 'kind'. {_FORM_HELP}")
    options = _kind_options(str(config["kind"]))
    for name in config:
        if name not in options:
            raise _unknown_option(str(config["kind"]), name, options)


def _triple_architecture(triple: str) -> str:
    arch = triple.split("-", 1)[0]
    return _ARCHITECTURE_ALIASES.get(arch, arch)


# LLVM's spellings of one architecture (the host triple on macOS says arm64).
_ARCHITECTURE_ALIASES = {"arm64": "aarch64", "amd64": "x86_64"}


def _check_triple(triple: str) -> None:
    # Checked before anything else reads the triple: with an architecture LLVM does not know,
    # llvm_get_cpu_archlist crashes the process (a segfault, not an exception).
    if triple.split("-", 1)[0] in set(llvm_codegen.llvm_get_targets()):
        return
    if llvm_codegen.llvm_is_valid_cpu("generic", triple):  # other spellings LLVM parses (armv7, i686, ...)
        return
    raise TargetError(
        f"-mtriple={triple} names no architecture LLVM knows; leave -mtriple out to build for this machine "
        f"({host_triple()}), or give an LLVM triple ARCH-VENDOR-OS such as x86_64-linux-gnu. {_FORM_HELP}"
    )


def _normalise_llvm(config: dict[str, Any], num_cores_given: bool) -> None:
    config.setdefault("mtriple", host_triple())
    _check_triple(str(config["mtriple"]))
    cpu = config.get("mcpu")
    if cpu == NATIVE_CPU:
        config["mcpu"] = host_cpu_name()
        if not num_cores_given and "num-cores" not in config:
            config["num-cores"] = physical_core_count()
    elif cpu is not None and not llvm_codegen.llvm_is_valid_cpu(str(cpu), str(config["mtriple"])):
        examples = ", ".join(sorted(llvm_codegen.llvm_get_cpu_archlist(Target(dict(config, mcpu="generic"))))[:12])
        raise TargetError(
            f"-mcpu={cpu} is not a CPU LLVM knows for the triple {config['mtriple']}; valid values are "
            f"'native' (this machine: {host_cpu_name()}) or an LLVM CPU name such as {examples}, ... "
            f"{_FORM_HELP}"
        )
    attributes = config.get("mattr", [])
    if isinstance(attributes, str):
        attributes = _parse_str_list("mattr", attributes)
        config["mattr"] = attributes
    for attribute in attributes:
        if str(attribute)[:1] not in ("+", "-") or len(str(attribute)) < 2:
            raise TargetError(
                f"-mattr entry {attribute!r} must be a feature with a sign, e.g. +avx2 or -avx512f. {_FORM_HELP}"
            )


# Target kind -> what must be filled in or checked before TVM sees the config.
_KIND_NORMALISERS: dict[str, Callable[[dict[str, Any], bool], None]] = {
    "llvm": _normalise_llvm,
}


def parse_target(text: str | Mapping[str, Any] | Target, num_cores: int | None = None) -> Target:
    """A TVM target from a classic CLI string, a JSON string, a dict or a ``Target``.

    ``mcpu=native`` becomes the host CPU's LLVM name (and ``num-cores`` defaults to this
    machine's physical cores); ``mtriple`` defaults to :func:`host_triple`; ``num_cores``, when
    given, overrides any ``-num-cores``. Raises :class:`TargetError` (a ``ValueError``) naming what
    is wrong and what would be valid.
    """
    config = _config_from(text)
    _check_config_keys(config)
    if num_cores is not None:
        if isinstance(num_cores, bool) or not isinstance(num_cores, int) or num_cores < 1:
            raise TargetError(f"num_cores must be an integer >= 1, got {num_cores!r}")
        config["num-cores"] = num_cores
    elif "num-cores" in config and (not isinstance(config["num-cores"], int) or config["num-cores"] < 1):
        raise TargetError(f"-num-cores must be an integer >= 1, got {config['num-cores']!r}. {_FORM_HELP}")
    normalise = _KIND_NORMALISERS.get(str(config["kind"]))
    if normalise is not None:
        normalise(config, num_cores is not None)
    try:
        return Target(config)
    except (ValueError, TypeError, RuntimeError) as error:
        raise TargetError(f"TVM rejected the target {config!r}: {error}. {_FORM_HELP}") from None


def _describe(target: str | Mapping[str, Any] | Target) -> str:
    return repr(target) if isinstance(target, (str, Mapping)) else repr(str(target))


def compile_target(target: str | Mapping[str, Any] | Target, num_cores: int | None = None) -> Target:
    """:func:`parse_target`, then refuse a target the compile pipeline cannot build and run: a kind
    other than :data:`BUILDABLE_KINDS` (GPU kinds, ``c`` source, ...) or a triple of another
    architecture than this machine's (the compiled library is linked by this machine's compiler
    and loaded here). Cheap: call it before any tracing or lowering. Raises :class:`TargetError`.
    """
    # The kind is read before TVM builds a Target of it: a cuda Target logs a warning of its own.
    kind = str(_config_from(target).get("kind", ""))
    if kind in _known_kinds() and kind not in BUILDABLE_KINDS:
        raise TargetError(
            f"cannot compile for the target {_describe(target)}: subp-fx builds its scheduled CPU kernels with "
            f"LLVM only, so the target kind must be {' or '.join(repr(k) for k in BUILDABLE_KINDS)}, not {kind!r} "
            f"(GPU kinds such as cuda, and source kinds such as c, have no kernels here). Valid targets: "
            f'"llvm" (generic code for {host_triple()}), "llvm -mcpu=native" (this machine, {host_cpu_name()}), '
            f'or "llvm -mcpu=CPU -mattr=+FEATURE,... -num-cores=N". {_FORM_HELP}'
        )
    parsed = parse_target(target, num_cores)
    triple = str(parsed.attrs["mtriple"])
    if _triple_architecture(triple) != _triple_architecture(host_triple()):
        raise TargetError(
            f"cannot compile for the target {_describe(target)}: its triple {triple} is not this machine's "
            f"architecture ({host_triple()}), and the compiled library is linked by this machine's C compiler and "
            f"loaded here to run; leave -mtriple out, or give a triple of the same architecture. {_FORM_HELP}"
        )
    return parsed
