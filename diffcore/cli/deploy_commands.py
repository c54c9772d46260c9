"""``diffcore env``, ``env diff``, ``golden record``, ``golden check`` and ``validate``: check the arguments,
call ``diffcore.deploy``, print the result, and return the exit code (0 pass, 1 a check failed).

Everything that can be checked before a model loads (spec files, tolerance pairs, output paths, text
files) is checked first.
"""
from __future__ import annotations

import sys

from ..errors import DiffcoreError
from .commands import check_tolerance_pair
from ..spec import check_spec
from .files import input_paths, load_inputs

__all__ = ["run_env", "run_golden", "run_validate"]


def _say(message: str) -> None:
    print(f"diffcore: {message}", file=sys.stderr)


def _emit(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _outputs(args, inputs: dict, kind: str):
    """--json OUT and --out FILE (the older spelling of --json FILE), checked before any model loads; an
    earlier document of schema ``kind`` is replaced with a note."""
    from .outputs import Outputs

    return Outputs({"--json": (getattr(args, "json", None), kind), "--out": (getattr(args, "out", None), kind)},
                   inputs, getattr(args, "force", False))


def _finish(args, outputs, data, text: str, verdict: str, what: str) -> None:
    """Write the JSON documents, then the human text (stderr when JSON went to stdout; only the verdict
    line with --quiet)."""
    from ..files import to_json

    document = to_json(data)
    for flag in ("--json", "--out"):
        outputs.write(flag, document, what, args.quiet)
    stream = sys.stderr if outputs.to_stdout else sys.stdout
    stream.write((verdict if args.quiet else text).rstrip("\n") + "\n")
    stream.flush()


# ---------------------------------------------------------------------------------------------- env

def run_env(args) -> int:
    """``diffcore env [--json] [--out FILE]``, or ``diffcore env diff A B``."""
    if getattr(args, "env_command", None) == "diff":
        if args.out:
            raise DiffcoreError("--out writes this machine's manifest and does not apply to 'env diff': write "
                                "the differences with 'env diff A B --json FILE'")
        return _run_env_diff(args)
    from .. import env

    outputs = _outputs(args, {}, env.SCHEMA)
    manifest = env.collect()
    table = "" if outputs.to_stdout and not args.quiet else _manifest_table(manifest)
    _finish(args, outputs, manifest, table, "diffcore: environment manifest collected",
            "environment manifest")
    return 0


def _manifest_table(manifest: dict) -> str:
    from .._deps import require
    from ..deploy.envdiff import flatten, rank_of

    tabulate = require("tabulate", "text tables").tabulate
    flat = flatten(manifest)
    keys = sorted(flat, key=lambda k: (rank_of(k)[0], k))
    cells = [[rank_of(k)[1], k, _clip(str(flat[k]))] for k in keys]
    return tabulate(cells, headers=["kind", "key", "value"], disable_numparse=True, tablefmt="simple")


def _clip(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _run_env_diff(args) -> int:
    import json
    import os

    from ..deploy.envdiff import env_diff
    from ..files import read_json

    outputs = _outputs(args, {"A.json": args.a, "B.json": args.b}, "diffcore.env-diff/1")
    a, b = (read_json(path, "environment", schema="environment") for path in (args.a, args.b))
    labels = tuple(_clip(os.path.basename(p), 28) for p in (args.a, args.b))
    if labels[0] == labels[1]:
        labels = ("A", "B")
    diff = env_diff(a, b, labels=labels)
    text = diff.to_text()
    _finish(args, outputs, json.loads(json.dumps(diff.to_dict(), default=str)), text,
            text.splitlines()[0] if text else "", "environment diff")
    return 1 if diff else 0


# ---------------------------------------------------------------------------------------------- golden

def _read_texts(path: str) -> list:
    """One golden text per line (blank lines skipped)."""
    from ..texts import read_lines

    return read_lines(path)


def _key(args):
    from ..deploy.golden_store import read_key_file

    return read_key_file(args.key_file) if args.key_file else None


def run_golden(args) -> int:
    """``diffcore golden record`` / ``diffcore golden check``."""
    return _golden_record(args) if args.golden_command == "record" else _golden_check(args)


def _golden_record(args) -> int:
    check_spec(args.model, "MODEL")
    check_tolerance_pair(args.atol, args.rtol)
    key = _key(args)
    texts = _read_texts(args.texts) if args.texts else None
    inputs = load_inputs(args.inputs) if args.inputs else None
    from ..deploy import record_golden

    golden = record_golden(args.model, inputs, args.out, traces=args.traces, texts=texts,
                           artifacts=args.artifacts, atol=args.atol, rtol=args.rtol, device=args.device,
                           providers=args.providers, force=args.force, key=key)
    meta = golden.meta
    parts = [f"{len(meta['inputs'])} input(s)", f"{len(meta['outputs'])} output(s)"]
    if golden.trace is not None:
        parts.append("per-layer trace")
    parts += [f"{len(meta['artifacts'])} artifact(s)", f"{len(meta['texts'])} text(s)"]
    if meta["texts"] and not meta["tokens"]:
        _say("warning: golden texts were stored but no token ids: no tokenizer.json or vocab.txt artifact "
             "is declared")
    _emit(f"diffcore: recorded golden {golden.directory} from {args.model}: {', '.join(parts)} "
          f"({golden.summary()})")
    return 0


def _golden_files(directory: str) -> dict:
    import os

    from ..deploy.golden import GOLDEN_FILES

    return {f"golden {name}": os.path.join(directory, name) for name in GOLDEN_FILES
            if os.path.exists(os.path.join(directory, name))}


def _golden_check(args) -> int:
    check_spec(args.model, "MODEL")
    check_tolerance_pair(args.atol, args.rtol)
    outputs = _outputs(args, _golden_files(args.golden) | input_paths(MODEL=args.model,
                                                                     artifact=args.artifacts),
                       "diffcore.golden-check/1")
    key = _key(args)
    from ..deploy import check_golden

    result = check_golden(args.model, args.golden, atol=args.atol, rtol=args.rtol, device=args.device,
                          providers=args.providers, layers=not args.no_layers, key=key,
                          artifacts=args.artifacts)
    text = result.to_text()
    _finish(args, outputs, result.to_dict(), text, _last_line(text), "golden check result")
    return result.exit_code


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------- validate

def run_validate(args) -> int:
    """``diffcore validate MODEL ...``: the checklist table (or JSON); 1 when any check failed."""
    check_spec(args.model, "MODEL")
    if args.inputs and args.golden:
        raise DiffcoreError("--inputs and --golden both give the sample inputs, and validate uses the golden's: "
                            "give one of them")
    if args.reference:
        check_spec(args.reference, "REFERENCE")
    check_tolerance_pair(args.atol, args.rtol)
    outputs = _outputs(args, input_paths(MODEL=args.model, REFERENCE=args.reference,
                                         **{"--inputs": args.inputs, "artifact": args.artifacts})
                       | (_golden_files(args.golden) if args.golden else {}), "diffcore.validate/1")
    inputs = load_inputs(args.inputs) if args.inputs else None
    from ..deploy import validate

    result = validate(args.model, reference=args.reference, golden=args.golden, inputs=inputs,
                      artifacts=args.artifacts, device=args.device, providers=args.providers,
                      target_gpu=args.target_gpu, atol=args.atol, rtol=args.rtol,
                      target_opset=args.target_opset, dynamic_axes=args.dynamic_axes, strict=args.strict)
    text = f"diffcore validate {args.model}\n{result.to_text()}"
    _finish(args, outputs, result.to_dict(), text, result.verdict_line(), "validate result")
    return result.exit_code
