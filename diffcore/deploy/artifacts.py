"""Preprocessing artifacts: the files that must travel with a model (tokenizer, vocabulary, normalization
statistics, feature config), fingerprinted when a golden set is recorded and checked before shipping.

A model declares them in ``<model stem>.artifacts.json`` beside the model file::

    {"schema": "diffcore.artifacts/1",
     "artifacts": [{"path": "tokenizer.json", "role": "tokenizer"},
                   {"path": "vocab.txt"},
                   {"path": "norm.json", "role": "normalization", "sha256": "<optional pin>"}]}

(paths relative to that file), or they are named directly (``--artifacts FILE ...``). Roles are inferred
from file names where not given. Where the ``tokenizers`` library is installed the golden texts are
tokenized with every tokenizer that can be built from the artifacts: ``tokenizer.json`` as it is, and
``tokenizer.json`` with each vocabulary file (``vocab.txt``/``vocab.json``) swapped in, since a deployment
may load either. A vocabulary without a tokenizer.json is read as a BERT WordPiece vocabulary.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .._deps import require
from ..errors import DiffcoreError, format_choices
from ..files import parse_json, read_json, sha256_file, write_json
from .checklist import CheckRow, failed, passed, skipped

__all__ = ["Artifact", "ARTIFACT_SCHEMA", "check_artifacts", "check_tokens", "declared_artifacts",
           "fingerprint", "manifest_beside", "read_artifact_manifest", "tokenize", "write_artifact_manifest"]

ARTIFACT_SCHEMA = "diffcore.artifacts/1"
ROLES = ("tokenizer", "vocabulary", "normalization", "feature-config", "config", "other")
CHECK_ARTIFACTS, CHECK_TOKENS = "artifacts", "tokenizer"
_REDO = ("ship the files the golden was recorded with, or re-validate the model with these files and "
         "re-record the golden (diffcore golden record ... --force)")


@dataclass
class Artifact:
    """A file that must travel with the model.

    Attributes:
        name: its name as declared (a path relative to the declaring manifest, or the file name).
        path: where it is on this machine.
        role: tokenizer, vocabulary, normalization, feature-config, config or other.
        sha256, size: pinned in the declaration, or as recorded (None when neither).
    """

    name: str
    path: str
    role: str = "other"
    sha256: str | None = None
    size: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "sha256": self.sha256, "size": self.size}


def infer_role(name: str) -> str:
    """The role a file name suggests (``tokenizer.json`` -> tokenizer, ``vocab.txt`` -> vocabulary, ...)."""
    base = os.path.basename(name).lower()
    if base == "tokenizer.json":
        return "tokenizer"
    if base.startswith(("vocab", "merges")) or base.endswith((".model", ".spm")):
        return "vocabulary"
    if any(word in base for word in ("norm", "mean", "std", "stats", "scaler")):
        return "normalization"
    if "feature" in base or "preprocessor" in base:
        return "feature-config"
    if "config" in base:
        return "config"
    return "other"


def manifest_beside(model) -> str | None:
    """``<dir>/<stem>.artifacts.json`` for a model that is a file (``x.onnx``, ``net.py:factory``), else None."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    from ..spec import spec_path

    path = spec_path(os.fspath(model))
    if path is None:
        return None
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(path)), f"{stem}.artifacts.json")


def read_artifact_manifest(path) -> list[Artifact]:
    """The artifacts an ``.artifacts.json`` declares, with paths resolved against its directory.

    Raises:
        DiffcoreError: not valid JSON, another schema, a malformed entry, a duplicate name or role.
    """
    data = read_json(path, "artifact manifest", schema="artifacts")
    if not isinstance(data, dict) or data.get("schema") != ARTIFACT_SCHEMA:
        raise DiffcoreError(f"artifact manifest {path} must be an object with \"schema\": "
                            f"\"{ARTIFACT_SCHEMA}\" and a list \"artifacts\"")
    entries = data.get("artifacts")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str)
                                                for e in entries):
        raise DiffcoreError(f"artifact manifest {path}: \"artifacts\" must be a list of objects with a "
                            "\"path\" string")
    base = os.path.dirname(os.path.abspath(path))
    out = [_entry(e, base, path) for e in entries]
    _check_unique(out, path)
    return out


def _entry(entry: dict, base: str, manifest) -> Artifact:
    role = entry.get("role") or infer_role(entry["path"])
    if role not in ROLES:
        raise DiffcoreError(f"artifact manifest {manifest}: role {role!r} of {entry['path']!r} is not one of "
                            f"{format_choices(ROLES)}")
    name = entry["path"].replace(os.sep, "/")
    return Artifact(name, os.path.join(base, entry["path"]), role, entry.get("sha256"), entry.get("size"))


def _check_unique(artifacts: list, where) -> None:
    names = [a.name for a in artifacts]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DiffcoreError(f"artifacts {format_choices(twice)} are declared twice in {where}")


def declared_artifacts(model=None, paths=None) -> list[Artifact]:
    """The artifacts of ``model``: ``paths`` when given (files, or one ``.artifacts.json``), else the
    manifest beside the model file, else a checkpoint folder's tokenizer files (checkpoint_artifacts), else none.

    Raises:
        DiffcoreError: a malformed manifest or duplicate file names.
    """
    if paths:
        paths = [os.fspath(p) for p in paths]
        if len(paths) == 1 and paths[0].endswith(".artifacts.json"):
            return read_artifact_manifest(paths[0])
        artifacts = [Artifact(os.path.basename(p), os.path.abspath(p), infer_role(p)) for p in paths]
        _check_unique(artifacts, "--artifacts")
        return artifacts
    beside = manifest_beside(model)
    if beside and os.path.isfile(beside):
        return read_artifact_manifest(beside)
    return checkpoint_artifacts(model)


def checkpoint_artifacts(model) -> list[Artifact]:
    """The tokenizer and preprocessor files of a Hugging Face checkpoint folder, recorded without being
    declared: an ``hf:FOLDER`` model's, or those beside a model file in an exported checkpoint folder
    (config.json beside it, as optimum writes one). The folder says which files it reads text with."""
    from ..capture.hf import HF_PREFIX, preprocessing_files

    if not isinstance(model, (str, os.PathLike)):
        return []
    model = os.fspath(model)
    if model.startswith(HF_PREFIX):
        folder = model[len(HF_PREFIX):]
    elif os.path.isfile(model) and os.path.isfile(os.path.join(os.path.dirname(model), "config.json")):
        folder = os.path.dirname(model)
    else:
        return []
    return [Artifact(p.name, str(p.resolve()), infer_role(p.name)) for p in preprocessing_files(folder)]


def write_artifact_manifest(path, files, *, roles=None, force: bool = False) -> str:
    """Write an ``.artifacts.json`` declaring ``files`` (paths relative to the manifest's directory).

    Args:
        roles: {file name: role} where the inferred role is not right.
    """
    base = os.path.dirname(os.path.abspath(path))
    entries = []
    for file in files:
        rel = os.path.relpath(os.path.abspath(file), base).replace(os.sep, "/")
        entries.append({"path": rel, "role": (roles or {}).get(os.path.basename(file)) or infer_role(rel)})
    return write_json(path, {"schema": ARTIFACT_SCHEMA, "artifacts": entries}, force=force,
                      what="artifact manifest")


def fingerprint(artifacts) -> list[dict]:
    """``[{name, role, sha256, size}]`` of the artifacts as they are now (for a golden set).

    Raises:
        DiffcoreError: a declared artifact is missing, or differs from the sha256 its declaration pins.
    """
    out = []
    for artifact in artifacts:
        if not os.path.isfile(artifact.path):
            raise DiffcoreError(f"declared artifact {artifact.name!r} not found at {artifact.path}: put it "
                                "there or remove it from the declaration")
        digest, size = sha256_file(artifact.path), os.path.getsize(artifact.path)
        if artifact.sha256 and artifact.sha256 != digest:
            raise DiffcoreError(f"artifact {artifact.name!r} has sha256 {digest[:12]}..., its declaration pins "
                                f"{artifact.sha256[:12]}...: use the pinned file or update the pin")
        out.append({"name": artifact.name, "role": artifact.role, "sha256": digest, "size": size})
    return out


# ------------------------------------------------------------------------------------------- the check

def check_artifacts(declared, recorded=None) -> CheckRow:
    """Presence of every declared artifact and, when a golden recorded them, that each is the same file.

    Args:
        declared: the Artifacts declared here (``declared_artifacts``).
        recorded: the golden's ``[{name, role, sha256, size}]``, or None without a golden.
    """
    if not declared and not recorded:
        return skipped(CHECK_ARTIFACTS, "no preprocessing artifacts declared",
                       "declare the files that travel with the model in <model>.artifacts.json beside it, "
                       "or with --artifacts FILE ...")
    problems, fixes, ok = [], [], []
    by_name = {r["name"]: r for r in recorded or []}
    for artifact in declared:
        _compare_one(artifact, by_name.get(artifact.name), recorded is not None, problems, fixes, ok)
    names = {a.name for a in declared}
    for entry in recorded or []:
        if entry["name"] not in names:
            problems.append(f"{entry['name']} ({entry['role']}) was recorded with the golden but is not "
                            "declared here")
            fixes.append(f"ship {entry['name']} with the model and declare it")
    data = {"declared": [a.to_dict() for a in declared], "recorded": recorded, "problems": problems}
    if problems:
        return failed(CHECK_ARTIFACTS, "; ".join(problems), "; ".join(dict.fromkeys(fixes)), **data)
    versus = "match the golden's" if recorded is not None else "present (no golden to compare versions with)"
    return passed(CHECK_ARTIFACTS, f"{len(ok)} artifact(s) {versus}: {', '.join(ok)}", **data)


def _compare_one(artifact, entry, have_golden, problems, fixes, ok) -> None:  # noqa: PLR0913
    if not os.path.isfile(artifact.path):
        problems.append(f"{artifact.name} ({artifact.role}) is missing: not found at {artifact.path}")
        fixes.append(f"ship {artifact.name} with the model")
        return
    digest, size = sha256_file(artifact.path), os.path.getsize(artifact.path)
    if artifact.sha256 and artifact.sha256 != digest:
        problems.append(f"{artifact.name} has sha256 {digest[:12]}..., its declaration pins "
                        f"{artifact.sha256[:12]}...")
        fixes.append(f"use the pinned {artifact.name} or update the pin")
        return
    if have_golden and entry is None:
        problems.append(f"{artifact.name} is declared but the golden did not record it (the model was not "
                        "validated with it)")
        fixes.append("re-record the golden with this artifact declared")
        return
    if entry is not None and (entry["sha256"] != digest or entry["size"] != size):
        problems.append(f"{artifact.name} ({artifact.role}) is not the version the model was validated "
                        f"with: sha256 {digest[:12]}... ({size} bytes) here, {entry['sha256'][:12]}... "
                        f"({entry['size']} bytes) recorded")
        fixes.append(_REDO)
        return
    ok.append(artifact.name)


# ------------------------------------------------------------------------------------------ tokenizers

def _sources(artifacts) -> dict:
    """{source name: zero-argument builder of a tokenizers.Tokenizer} for the artifacts."""
    tokenizers_json = [a for a in artifacts if a.role == "tokenizer" and a.name.endswith(".json")]
    vocabularies = [a for a in artifacts if a.role == "vocabulary"
                    and os.path.basename(a.name).lower() in ("vocab.txt", "vocab.json")]
    sources = {}
    for tok in tokenizers_json:
        sources[tok.name] = lambda tok=tok: _from_file(tok.path)
        for vocab in vocabularies:
            sources[f"{tok.name} + {vocab.name}"] = lambda tok=tok, vocab=vocab: _with_vocab(tok.path, vocab.path)
    if not tokenizers_json:
        for vocab in vocabularies:
            if vocab.name.endswith(".txt"):
                sources[vocab.name] = lambda vocab=vocab: _wordpiece(vocab.path)
    return sources


def _tokenizers():
    return require("tokenizers", "checking tokenizers against the golden texts")


def load_tokenizer(path):
    """A ``tokenizers.Tokenizer`` from a tokenizer.json (DiffcoreError when it cannot be loaded)."""
    return _from_file(path)


def _from_file(path):
    try:
        return _tokenizers().Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises its own Exception type for a bad file
        raise DiffcoreError(f"cannot load tokenizer {path}: {exc}") from None


def _read_vocab(path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffcoreError(f"cannot read vocabulary {path}: {exc}") from None
    if path.endswith(".json"):
        vocab = parse_json(text, f"vocabulary {path}")
        if not isinstance(vocab, dict):
            raise DiffcoreError(f"vocabulary {path} is not a JSON object of token -> id")
        return vocab
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return {token: index for index, token in enumerate(lines)}  # BertTokenizer's load_vocab, line = id


def _with_vocab(tokenizer_path, vocab_path):
    """The tokenizer.json pipeline with its model's vocabulary replaced by ``vocab_path``'s."""
    try:
        with open(tokenizer_path, encoding="utf-8") as handle:
            data = parse_json(handle.read(), f"tokenizer {tokenizer_path}")
    except (OSError, ValueError) as exc:
        raise DiffcoreError(f"cannot read tokenizer {tokenizer_path}: {exc}") from None
    model = (data.get("model") if isinstance(data, dict) else None) or {}
    if not isinstance(model, dict):
        model = {}
    if not isinstance(model.get("vocab"), dict):
        raise DiffcoreError(f"tokenizer {tokenizer_path} ({model.get('type')}) has no token -> id vocabulary "
                            f"that {os.path.basename(vocab_path)} could replace")
    model["vocab"] = _read_vocab(vocab_path)
    try:
        return _tokenizers().Tokenizer.from_str(json.dumps(data))
    except Exception as exc:
        raise DiffcoreError(f"tokenizer {tokenizer_path} with vocabulary {vocab_path} cannot be built: "
                            f"{exc}") from None


def _wordpiece(vocab_path):
    try:
        return _tokenizers().BertWordPieceTokenizer(vocab_path)
    except Exception as exc:
        raise DiffcoreError(f"cannot build a WordPiece tokenizer from {vocab_path}: {exc}") from None


def tokenize(artifacts, texts) -> dict:
    """Token ids and tokens of ``texts`` under every tokenizer the artifacts make.

    Returns:
        {source: {"ids": [[int]], "tokens": [[str]]}}; empty without tokenizer artifacts.

    Raises:
        MissingDependencyError: tokenizers is not installed (only asked when there is something to tokenize).
        DiffcoreError: a tokenizer file that cannot be loaded.
    """
    sources = _sources(artifacts)
    out = {}
    for name, build in sources.items():
        encodings = [build().encode(text) for text in texts] if texts else []
        out[name] = {"ids": [list(e.ids) for e in encodings], "tokens": [list(e.tokens) for e in encodings]}
    return out


def check_tokens(artifacts, texts, recorded) -> CheckRow:
    """Tokenize the golden ``texts`` with the artifacts here and compare with the ``recorded`` token ids.

    Skipped (with the reason) without golden texts, recorded ids, tokenizer artifacts or the tokenizers
    library; failed when any tokenizer gives other ids than recorded, naming the first differing token.
    """
    if not texts:
        return skipped(CHECK_TOKENS, "no golden texts recorded", "record the golden with --texts FILE "
                       "(one text per line) and a tokenizer artifact declared")
    if not recorded:
        return skipped(CHECK_TOKENS, "the golden recorded no token ids (no tokenizer or vocabulary artifact "
                       "was declared when it was recorded)", "declare tokenizer.json / vocab.txt and re-record")
    try:
        _tokenizers()
    except ImportError as exc:
        return skipped(CHECK_TOKENS, f"cannot tokenize here: {exc}", "pip install 'diffcore[tokenizers]'")
    sources = _sources(artifacts)
    if not sources:
        return failed(CHECK_TOKENS, f"the golden recorded token ids with {format_choices(recorded)} but no "
                      "tokenizer or vocabulary artifact is declared here",
                      "ship the tokenizer files with the model and declare them")
    problems, ok = [], []
    for source, want in recorded.items():
        problem = _check_source(source, sources.get(source), texts, want)
        (problems if problem else ok).append(problem or source)
    data = {"texts": len(texts), "sources": list(recorded), "problems": problems,
            "not_recorded": [s for s in sources if s not in recorded]}
    if problems:
        return failed(CHECK_TOKENS, "; ".join(problems), "the tokenizer or vocabulary is not the version the "
                      "model was validated with: " + _REDO, **data)
    return passed(CHECK_TOKENS, f"{len(texts)} golden text(s) give the recorded token ids with "
                  f"{', '.join(ok)}", **data)


def _check_source(source, build, texts, want) -> str:
    """'' when ``source`` reproduces ``want``; else what differs, in words."""
    if build is None:
        return f"{source}: its files are not declared here"
    try:
        tokenizer = build()
    except DiffcoreError as exc:
        return f"{source}: {exc}"
    bad = []
    for i, (text, ids) in enumerate(zip(texts, want["ids"])):
        got = tokenizer.encode(text)
        if list(got.ids) != list(ids):
            bad.append((i, text, got, ids))
    if not bad:
        return ""
    i, text, got, ids = bad[0]
    pos = next((k for k, (a, b) in enumerate(zip(got.ids, ids)) if a != b), min(len(got.ids), len(ids)))
    recorded_tok = want["tokens"][i][pos] if pos < len(want["tokens"][i]) else "(end)"
    now = f"{got.ids[pos]} ({got.tokens[pos]!r})" if pos < len(got.ids) else "(end)"
    then = f"{ids[pos]} ({recorded_tok!r})" if pos < len(ids) else "(end)"
    short = text if len(text) <= 40 else text[:37] + "..."
    return (f"{source}: {len(bad)} of {len(texts)} text(s) tokenize differently; text {i + 1} {short!r} at "
            f"token {pos}: recorded {then}, now {now}")
