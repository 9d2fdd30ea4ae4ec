"""Run one function of template.yaml on an event, in this process: `sam local invoke` without
Docker.

    dropflow invoke PredictFunction -e events/apigw-health.json [--template template.yaml]
        [--env-vars env.json]

Before it runs anything it checks that the function is ever sent an event of this shape (its
`Events` in the template: a REST API proxy event, an EventBridge event its rule matches, a
schedule's) and otherwise says what the function takes and which function takes the event
(dropflow_dev.event_shapes); `dropflow events` makes an event of the right shape.

What it emulates: the function's code directory and handler (Globals included), its
environment variables, a Lambda context with its memory and timeout, and a cold start (the
module is imported afresh and dropflow's cached services are reset). What it does not: the
runtime's python, layers (the checkout's dropflow package is used), IAM, timeouts.

Environment, lowest to highest precedence:
  1. the template's variables whose values are plain, or a !Ref to a parameter's Default;
     other intrinsics (!Sub, !GetAtt...) name AWS resources and are left out;
  2. DROPFLOW_* variables already set in this process (the local runtime's configuration
     must win over the template's AWS URLs);
  3. the --env-vars file (SAM's format {"Parameters": {...}, "<LogicalId>": {...}}, or a flat
     {"NAME": "value"} object) or the `env` argument.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dropflow.errors import DropflowError

FUNCTION_TYPE = "AWS::Serverless::Function"
# Handler modules are imported under this prefix, never under their file name (app).
MODULE_PREFIX = "_dropflow_invoke_"


class InvokeError(DropflowError):
    """The template, the function, the event or the env file cannot be used as given."""


# --------------------------------------------------------------------------- template
class _CloudFormationLoader(yaml.SafeLoader):
    """A safe YAML loader that reads CloudFormation's short tags as their long form."""


def _construct_intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # !GetAtt Resource.Attribute is the short form of ["Resource", "Attribute"].
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(template_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The template as plain dicts, lists and strings; short tags become {"Fn::X": ...}."""
    path = Path(template_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvokeError(f"template not found: {path}") from None
    try:
        template = yaml.load(text, Loader=_CloudFormationLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InvokeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise InvokeError(f"{path}: no Resources section; is this a SAM template?")
    return template


def function_ids(template: Mapping[str, Any]) -> list[str]:
    """Logical ids of the template's AWS::Serverless::Function resources, sorted."""
    return sorted(
        name
        for name, resource in template.get("Resources", {}).items()
        if isinstance(resource, dict) and resource.get("Type") == FUNCTION_TYPE
    )


@dataclass(frozen=True)
class FunctionInfo:
    """Where a function's code is and how the template configures it."""

    logical_id: str
    template_path: Path
    code_dir: Path
    handler: str  # as in the template, e.g. "app.lambda_handler"
    module_file: Path
    module_name: str  # unique per function and template, so app.py files never collide
    runtime: str
    memory_size: int
    timeout: float
    # The template's variables, intrinsics left as dicts (see environment_for).
    environment: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)


def _merged_properties(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    """The function's properties with Globals.Function under them, as SAM merges them."""
    globals_ = dict((template.get("Globals") or {}).get("Function") or {})
    own = dict(template["Resources"][logical_id].get("Properties") or {})
    merged = {**globals_, **own}
    # Maps merge key by key (the function's value wins); Environment is the one that matters.
    global_vars = (globals_.get("Environment") or {}).get("Variables") or {}
    own_vars = (own.get("Environment") or {}).get("Variables") or {}
    merged["Environment"] = {"Variables": {**global_vars, **own_vars}}
    return merged


def describe_function(template_path: str | os.PathLike[str], logical_id: str) -> FunctionInfo:
    """What the template says about `logical_id`, without importing its code."""
    path = Path(template_path).resolve()
    template = load_template(path)
    resource = template["Resources"].get(logical_id)
    known = ", ".join(function_ids(template)) or "(none)"
    if not isinstance(resource, dict):
        raise InvokeError(f"no resource {logical_id!r} in {path}; functions: {known}")
    if resource.get("Type") != FUNCTION_TYPE:
        raise InvokeError(
            f"{logical_id} is a {resource.get('Type')}, not a function; functions: {known}"
        )

    props = _merged_properties(template, logical_id)
    if props.get("PackageType") == "Image":
        raise InvokeError(f"{logical_id} is a container image function; use sam local invoke")
    runtime = str(props.get("Runtime", ""))
    if not runtime.startswith("python"):
        raise InvokeError(f"{logical_id} runs {runtime or 'no runtime'}; only python runs here")
    code_uri = props.get("CodeUri")
    if not isinstance(code_uri, str) or code_uri.startswith("s3://"):
        raise InvokeError(f"{logical_id}: CodeUri must be a local folder, got {code_uri!r}")
    handler = props.get("Handler")
    if not isinstance(handler, str) or "." not in handler:
        raise InvokeError(f"{logical_id}: Handler must look like module.function, got {handler!r}")

    code_dir = (path.parent / code_uri).resolve()
    module, _, _ = handler.rpartition(".")
    module_file = code_dir.joinpath(*module.split(".")).with_suffix(".py")
    # The template's path is part of the name, so the same logical id in two templates (tests
    # use small ones) never shares a module either.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    module_name = f"{MODULE_PREFIX}{digest}_{logical_id}_{module.replace('.', '_')}"
    return FunctionInfo(
        logical_id=logical_id,
        template_path=path,
        code_dir=code_dir,
        handler=handler,
        module_file=module_file,
        module_name=module_name,
        runtime=runtime,
        memory_size=int(_scalar(props.get("MemorySize", 128), template, logical_id)),
        timeout=float(_scalar(props.get("Timeout", 3), template, logical_id)),
        environment=dict(props["Environment"]["Variables"]),
        parameters=dict(template.get("Parameters") or {}),
    )


def _scalar(value: Any, template: dict[str, Any], logical_id: str) -> Any:
    """A property as its value: a literal, or a !Ref to a template parameter's default."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        parameter = (template.get("Parameters") or {}).get(value["Ref"])
        if not isinstance(parameter, dict) or "Default" not in parameter:
            raise InvokeError(
                f"{logical_id}: {value['Ref']!r} is not a template parameter with a default"
            )
        return parameter["Default"]
    return value


@contextlib.contextmanager
def _code_dir_on_path(code_dir: Path) -> Iterator[None]:
    """Lambda puts the code directory first on sys.path, so a handler may import siblings.

    Siblings imported meanwhile are dropped from sys.modules afterwards (the handler keeps
    its references): two functions may both have a `models.py`, and the second must not be
    handed the first one's.
    """
    prefix = str(code_dir) + os.sep
    sys.path.insert(0, str(code_dir))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(code_dir))
        for name, module in list(sys.modules.items()):
            path = str(getattr(module, "__file__", None) or "")
            if path.startswith(prefix) and not name.startswith(MODULE_PREFIX):
                del sys.modules[name]


def load_function(
    template_path: str | os.PathLike[str], logical_id: str
) -> tuple[Callable[..., Any], FunctionInfo]:
    """The function's handler, freshly imported (a cold start), and what the template says.

    The module is imported under FunctionInfo.module_name, so four `app.py` files load side
    by side. Module-level code runs with the current environment: set it first (invoke does).
    """
    info = describe_function(template_path, logical_id)
    if not info.module_file.is_file():
        raise InvokeError(
            f"{logical_id}: {info.module_file} not found (CodeUri + Handler {info.handler})"
        )
    spec = importlib.util.spec_from_file_location(info.module_name, info.module_file)
    if spec is None or spec.loader is None:
        raise InvokeError(f"{logical_id}: cannot import {info.module_file}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, as an import would be: dataclasses and pydantic models
    # look their module up in sys.modules while the module body runs.
    sys.modules[info.module_name] = module
    try:
        with _code_dir_on_path(info.code_dir):
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(info.module_name, None)
        raise
    attribute = info.handler.rpartition(".")[2]
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise InvokeError(
            f"{logical_id}: {info.module_file} has no function {attribute!r} "
            f"(Handler: {info.handler})"
        )
    return handler, info


# --------------------------------------------------------------------------- environment
def _plain(value: Any, parameters: Mapping[str, Any]) -> str | None:
    """The value as Lambda would see it, or None when only CloudFormation can resolve it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict) and set(value) == {"Ref"}:
        spec = parameters.get(value["Ref"])
        if isinstance(spec, dict) and "Default" in spec:
            return _plain(spec["Default"], parameters)
    return None


def environment_for(
    info: FunctionInfo,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The variables to set for the function, and the names left unset (AWS-only values).

    `environ` is the process environment (os.environ by default): DROPFLOW_* names already
    set there win over the template. `overrides` win over everything.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    values: dict[str, str] = {}
    unresolved: list[str] = []
    for name, raw in info.environment.items():
        if name in overrides or (name.startswith("DROPFLOW_") and name in environ):
            continue
        value = _plain(raw, info.parameters)
        if value is None:
            unresolved.append(name)
        else:
            values[name] = value
    values.update({name: str(value) for name, value in overrides.items()})
    return values, unresolved


def _lambda_variables(info: FunctionInfo) -> dict[str, str]:
    # What the Lambda runtime itself sets and powertools reads; AWS_SAM_LOCAL also keeps
    # powertools' Tracer off, as under `sam local invoke`.
    return {
        "AWS_LAMBDA_FUNCTION_NAME": info.logical_id,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(info.memory_size),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(info.timeout)),
        "AWS_SAM_LOCAL": "true",
    }


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _reset_cached_services() -> None:
    # A cold start: settings and adapters are built again from the environment just set.
    # Only modules already imported have anything cached to forget.
    services = sys.modules.get("dropflow.wiring")
    if services is not None:
        services.reset()
    config = sys.modules.get("dropflow.config")
    if config is not None:
        config.settings.cache_clear()


def _context(info: FunctionInfo) -> Any:
    from dropflow_dev.lambda_context import LambdaContext

    return LambdaContext(
        function_name=info.logical_id,
        memory_limit_in_mb=info.memory_size,
        timeout_seconds=info.timeout,
    )


def invoke(
    template_path: str | os.PathLike[str],
    logical_id: str,
    event: Any,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Call the function's handler with `event` and a Lambda context; return its result.

    The environment is set for the import and the call and restored afterwards; exceptions
    from the handler propagate unchanged.
    """
    info = describe_function(template_path, logical_id)
    values, _ = environment_for(info, env)
    with _environment({**_lambda_variables(info), **values}):
        _reset_cached_services()
        handler, info = load_function(template_path, logical_id)
        with _code_dir_on_path(info.code_dir):  # for siblings imported inside the handler
            return handler(event, _context(info))


# --------------------------------------------------------------------------- files and CLI
def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """A JSON file's content; an InvokeError names the file and the line of a syntax error."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvokeError(f"{what} not found: {path}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvokeError(
            f"{path}:{exc.lineno}:{exc.colno}: {what} is not valid JSON: {exc.msg}"
        ) from None


def read_env_vars(path: str | os.PathLike[str], logical_id: str) -> dict[str, str]:
    """Overrides from an --env-vars file, in SAM's per-function format or as a flat object."""
    data = read_json(path, "env vars file")
    if not isinstance(data, dict):
        raise InvokeError(f"{path}: env vars file must hold a JSON object")
    if any(isinstance(value, dict) for value in data.values()):
        # SAM's format: "Parameters" applies to every function, then the function's own.
        merged = {**(data.get("Parameters") or {}), **(data.get(logical_id) or {})}
    else:
        merged = data
    return {name: "" if value is None else str(value) for name, value in merged.items()}


def checked_event(template: Mapping[str, Any], logical_id: str, event: Any) -> Any:
    """`event` as the function is to be invoked with it (an EventBridge envelope completed
    where that is safe, saying so on stderr); an InvokeError when the function is never sent
    an event of its shape, naming what it takes and what to use instead."""
    from dropflow_dev import event_shapes

    verdict = event_shapes.check(template, logical_id, event)
    if not verdict.accepted:
        raise InvokeError(event_shapes.refusal(logical_id, verdict))
    for note in verdict.notes:
        print(f"dropflow invoke: {note}", file=sys.stderr)
    return verdict.event


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # The handler's logs (powertools writes to stdout) go to stderr, as with sam local invoke,
    # so stdout carries only the result and `dropflow invoke ... | jq` works.
    # Both levels: the file descriptor (for C extensions) and sys.stdout (for print).
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """`dropflow invoke`: print the handler's result as JSON. 0 ok, 1 the function raised,
    2 the template, event or env file could not be used, or the event is of a shape the
    function is never sent (dropflow_dev.event_shapes)."""
    parser = argparse.ArgumentParser(
        prog="dropflow invoke", description="Run one function of template.yaml (no Docker)."
    )
    parser.add_argument("function", metavar="FunctionLogicalId")
    parser.add_argument("-e", "--event", required=True, type=Path, help="event JSON file")
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--env-vars", type=Path, help="JSON of environment overrides")
    args = parser.parse_args(argv)

    try:
        event = read_json(args.event, "event file")
        overrides = read_env_vars(args.env_vars, args.function) if args.env_vars else {}
        info = describe_function(args.template, args.function)
        event = checked_event(load_template(args.template), args.function, event)
        _, unresolved = environment_for(info, overrides)
        if unresolved:
            print(
                f"dropflow invoke: left unset (their template values exist only on AWS): "
                f"{', '.join(unresolved)}; set them with --env-vars if the function needs them",
                file=sys.stderr,
            )
        with _stdout_to_stderr():
            result = invoke(args.template, args.function, event, overrides)
    except InvokeError as exc:
        print(f"dropflow invoke: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Shaped like Lambda's own error answer, so scripts read both the same way.
        error = {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc),
        }
        print(json.dumps(error, indent=2))
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
