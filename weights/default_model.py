"""The built-in default model: exported (tools/export_wenet.py) and extracted on first use, cached.

    paths = ensure_model("aishell", seed=0)
    paths.encoder_onnx, paths.decoder_onnx, paths.cases, paths.weights_dir

Cache root: $WENET_TRT_CACHE, else <repo>/.cache/models. An entry's folder name carries a short
hash of the exporter and extractor sources, so changing either rebuilds it. An entry is built in a
temporary folder and renamed into place, so an interrupted build leaves nothing half-written; a
lock file makes a concurrent builder of the same entry (another pytest run) wait and reuse it.
torch is imported only when an entry has to be built.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from netdef.files import atomic_dir

REPO = Path(__file__).resolve().parents[1]
# Every source whose change changes the exported ONNX, the cases or the extracted weights.
SOURCES = ("tools/wenet_model.py", "tools/export_wenet.py", "tools/extract_weights.py",
           "weights/extract.py", "weights/loader.py")
CONFIG_NAMES = ("aishell", "tiny")
DECODER_MODES = ("hackathon", "best_index")


@dataclass(frozen=True)
class ModelPaths:
    dir: Path
    encoder_onnx: Path
    decoder_onnx: Path
    cases: Path
    weights_dir: Path
    config_name: str
    seed: int


def cache_root(root: str | os.PathLike | None = None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("WENET_TRT_CACHE")
    return Path(env) if env else REPO / ".cache" / "models"


def sources_hash() -> str:
    digest = hashlib.sha256()
    for rel in SOURCES:
        digest.update(rel.encode() + b"\0" + (REPO / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:10]


def _paths(entry: Path, name: str, seed: int) -> ModelPaths:
    return ModelPaths(dir=entry, encoder_onnx=entry / "encoder.onnx", decoder_onnx=entry / "decoder.onnx",
                      cases=entry / "cases.npz", weights_dir=entry / "weights", config_name=name, seed=seed)


def ensure_model(name: str = "aishell", seed: int = 0, *, root: str | os.PathLike | None = None,
                 decoder: str = "hackathon") -> ModelPaths:
    """Paths of the cached export + extraction of the reference model `name`, building it if needed."""
    if name not in CONFIG_NAMES:
        raise ValueError(f"ensure_model: name must be one of {CONFIG_NAMES}, got {name!r}")
    if decoder not in DECODER_MODES:
        raise ValueError(f"ensure_model: decoder must be one of {DECODER_MODES}, got {decoder!r}")
    suffix = "" if decoder == "hackathon" else f"-{decoder}"
    entry = cache_root(root) / f"{name}-seed{seed}{suffix}-{sources_hash()}"
    paths = _paths(entry, name, seed)
    if (entry / "weights" / "config.json").is_file():
        return paths

    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / f".{entry.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (entry / "weights" / "config.json").is_file():
            _build(entry, name, seed, decoder)
    return paths


def _build(entry: Path, name: str, seed: int, decoder: str) -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tools.export_wenet import export  # imports torch
    from tools.extract_weights import extract_to

    with atomic_dir(entry) as build:
        print(f"exporting {name} (seed {seed})...", file=sys.stderr, flush=True)
        export(name, seed, build, decoder=decoder, log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"extracting weights of {name} (seed {seed})...", file=sys.stderr, flush=True)
        extract_to(build / "encoder.onnx", build / "decoder.onnx", build / "weights")
    print(f"model cached in {entry}", file=sys.stderr, flush=True)
