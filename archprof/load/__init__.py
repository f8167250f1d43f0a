"""Resolve what the user names into objects, with one clear error for anything that does
not resolve: model specs (`specs`), model files read as data (`files`, `torchscript`, `exported`),
checkpoints (`weights`), inputs (`inputs`) and factory arguments (`options`), into a
`LoadedModel` (`model`)."""

from archprof.load.common import DTYPES, HUBS, INPUT_DTYPES, MODEL_FILE_SUFFIXES
from archprof.load.inputs import (
    InputsLike,
    InputSpec,
    nested_hint,
    normalize_inputs,
    parse_dtype,
    parse_input_dtype,
    parse_input_size,
    parse_input_spec,
)
from archprof.load.model import LoadedModel, check_static_shapes, device_of
from archprof.load.options import ModelOptions, parse_arg_value, parse_args
from archprof.load.specs import PythonFactory, load_model, module_source, python_factory
from archprof.load.weights import load_state_dict

__all__ = [
    "DTYPES",
    "HUBS",
    "INPUT_DTYPES",
    "MODEL_FILE_SUFFIXES",
    "InputSpec",
    "InputsLike",
    "LoadedModel",
    "ModelOptions",
    "PythonFactory",
    "check_static_shapes",
    "device_of",
    "load_model",
    "load_state_dict",
    "module_source",
    "nested_hint",
    "normalize_inputs",
    "parse_arg_value",
    "parse_args",
    "parse_dtype",
    "parse_input_dtype",
    "parse_input_size",
    "parse_input_spec",
    "python_factory",
]
