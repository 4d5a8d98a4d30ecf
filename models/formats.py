"""What a model file is, told from its name and content without any ML library.

Listing runs in the web process, which must never import torch, xgboost or lightgbm, so
the type of a file is decided here: XGBoost JSON/UBJSON hold a "learner" object,
LightGBM text models start with a "tree" line, the two kinds of PyTorch zip archive
differ in their members, and a pickle is read opcode by opcode (`pickletools` builds no
object and runs no code) for the library it references.
"""

from __future__ import annotations

import pickletools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base import ModelRefused

SIDECAR_SUFFIX = ".meta.json"
TEMP_SUFFIXES = (".tmp", ".part")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
TORCH_SUFFIXES = (".pt", ".pth")
MODEL_SUFFIXES = (".json", ".ubj", ".txt", *TORCH_SUFFIXES, *PICKLE_SUFFIXES)
_HEAD_BYTES = 4096
_UBJSON_OBJECT_NEXT = b"}iUIlL"  # what may follow "{" in UBJSON: "}" or a key's length type


@dataclass(frozen=True)
class Kind:
    type: str
    format: str


def is_candidate(name: str) -> bool:
    """Whether a directory entry may be a model: not hidden, not a sidecar, not a temp file."""
    lowered = name.lower()
    return not (
        name.startswith(".") or lowered.endswith(SIDECAR_SUFFIX) or lowered.endswith(TEMP_SUFFIXES)
    ) and lowered.endswith(MODEL_SUFFIXES)


def detect(path: Path) -> Kind:
    """The type and format of a model file; ModelRefused (with the reason) if unknown."""
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return Kind("lstm", torch_archive_kind(path))
    if suffix in PICKLE_SUFFIXES:
        library = pickled_library(path)
        if library is None:
            raise ModelRefused(
                f"{path.name}: not a plain pickle of an XGBoost or LightGBM model "
                "(compressed joblib files are not supported)"
            )
        return Kind(library, "pickle")
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if suffix == ".json":
        if head.lstrip().startswith(b"{") and b'"learner"' in head:
            return Kind("xgboost", "json")
        raise ModelRefused(f"{path.name}: not an XGBoost JSON model (as written by Booster.save_model)")
    if suffix == ".ubj":
        if head[:1] == b"{" and len(head) > 1 and head[1] in _UBJSON_OBJECT_NEXT and b"learner" in head:
            return Kind("xgboost", "ubj")
        raise ModelRefused(f"{path.name}: not an XGBoost UBJSON model (as written by Booster.save_model)")
    if suffix == ".txt":
        if head.startswith((b"tree\n", b"tree\r\n")):
            return Kind("lightgbm", "txt")
        raise ModelRefused(f"{path.name}: not a LightGBM text model (as written by Booster.save_model)")
    raise ModelRefused(f"{path.name}: unknown model format {suffix or '(no extension)'!r}")


def torch_archive_kind(path: Path) -> str:
    """ "torchscript" (torch.jit.save) or "checkpoint" (torch.save), from the zip's members."""
    if not zipfile.is_zipfile(path):
        raise ModelRefused(
            f"{path.name}: not a PyTorch zip archive; legacy torch files are not served, "
            "re-save it with torch.save or torch.jit.save"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelRefused(f"{path.name}: a damaged zip archive") from exc
    # Members sit under one top folder whose name depends on how the file was saved.
    members = {name.split("/", 1)[1] for name in names if "/" in name}
    if "constants.pkl" in members and any(member.startswith("code/") for member in members):
        return "torchscript"
    if "data.pkl" in members:
        return "checkpoint"
    raise ModelRefused(f"{path.name}: a zip archive, but neither a TorchScript module nor a torch.save file")


def pickled_library(path: Path) -> str | None:
    """ "xgboost" or "lightgbm": the first ML library the pickle references, else None."""
    try:
        with path.open("rb") as handle:
            for module in _pickled_modules(handle):
                top = module.split(".", 1)[0]
                if top in ("xgboost", "lightgbm"):
                    return top
    except Exception:  # malformed or not a pickle at all (e.g. compressed joblib)
        return None
    return None


def _pickled_modules(handle: Any) -> Iterator[str]:
    # STACK_GLOBAL (protocol 4+) takes module and name from the stack: follow the pushed
    # strings, through the memo, just far enough to know the last two.
    recent: list[Any] = [None, None]
    memo: dict[int, Any] = {}
    for opcode, arg, _ in pickletools.genops(handle):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            yield str(arg).split(" ", 1)[0]
            recent.append(None)
        elif name == "STACK_GLOBAL":
            if isinstance(recent[-2], str):
                yield recent[-2]
            recent.append(None)
        elif "UNICODE" in name or name.endswith("STRING"):
            recent.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))
        elif name not in ("FRAME", "PROTO"):
            recent.append(None)
        del recent[:-2]
