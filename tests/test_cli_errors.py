"""
Bad input, a hostile environment and interruptions: `nncf-hqq` (the console command, in a subprocess) prints one
line, exits with code 2 (130 when interrupted), and leaves nothing behind or deleted; the export cache heals.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nncf_hqq.cli.pipeline import METADATA_FILE
from nncf_hqq.cli.workdirs import MANIFEST_FILE
from nncf_hqq.cli.workdirs import OWNER_FILE

pytestmark = pytest.mark.slow  # the console command in subprocesses

COMMAND = str(Path(sys.executable).parent / "nncf-hqq")


def run(*args: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str, code: int = 2) -> None:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nncf-hqq: "), result.stderr[-3000:]
    assert expected in lines[0], lines[0]


def tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


@pytest.fixture(scope="module")
def full_precision_dir(bundled_hqq, cache_dir) -> Path:
    """The cached full-precision export of the bundled model (an optimum-intel IR directory)."""
    return next(p for p in cache_dir.iterdir() if (p / "openvino_model.xml").exists())


# ---------------------------------------------------------------------------------------- sources that cannot be read


def _text_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text("hello\n")
    return path


def _truncated_gguf(tmp_path: Path) -> Path:
    from nncf_hqq.cli.export import bundled_gguf

    path = tmp_path / "truncated.gguf"
    with bundled_gguf().open("rb") as f:
        path.write_bytes(f.read(20_000_000))
    return path


def _ir_copy(full_precision_dir: Path, tmp_path: Path, damage: str) -> Path:
    ir = tmp_path / f"ir-{damage}"
    shutil.copytree(full_precision_dir, ir)
    if damage == "no-bin":
        (ir / "openvino_model.bin").unlink()
    elif damage == "short-bin":
        os.truncate(ir / "openvino_model.bin", 1_000_000)
    return ir


def _huggingface_dir(tmp_path: Path, config: str, weights: bool) -> Path:
    path = tmp_path / "hf"
    path.mkdir()
    (path / "config.json").write_text(config)
    if weights:
        (path / "model.safetensors").write_bytes(b"\0" * 8)
    return path


def _make_source(kind: str, full_precision_dir: Path, compressed_dir: Path, tmp_path: Path) -> Path:
    if kind in ("text-xml", "text-gguf"):
        return _text_file(tmp_path, "model.xml" if kind == "text-xml" else "model.gguf")
    if kind == "truncated-gguf":
        return _truncated_gguf(tmp_path)
    if kind in ("no-bin", "short-bin"):
        return _ir_copy(full_precision_dir, tmp_path, kind)
    if kind == "bad-config-json":
        return _huggingface_dir(tmp_path, "{not json", weights=True)
    if kind == "hf-without-weights":
        return _huggingface_dir(tmp_path, '{"architectures": ["LlamaForCausalLM"]}', weights=False)
    return compressed_dir  # an output of nncf-hqq compress


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("text-xml", "not an OpenVINO IR"),
        ("text-gguf", "not a GGUF file"),
        ("truncated-gguf", "not a readable GGUF file"),
        ("no-bin", "weights file"),
        ("short-bin", "OpenVINO cannot read it"),
        ("bad-config-json", "not valid JSON"),
        ("hf-without-weights", "no weight files"),
        ("compressed-model", "already compressed"),
    ],
)
def test_unreadable_source_is_one_line_and_leaves_no_file(kind, expected, full_precision_dir, bundled_hqq, tmp_path):
    source = _make_source(kind, full_precision_dir, bundled_hqq, tmp_path)
    before = tree(tmp_path)
    result = run("compress", "--src", str(source), "--dst", str(tmp_path / "out"), "--cache-dir",
                 str(tmp_path / "cache"))  # fmt: skip
    assert_one_line_error(result, expected)
    assert tree(tmp_path) == before  # no output, no cache directory, nothing changed


# ----------------------------------------------------------------------------------------------------- environment


def test_destination_whose_parent_is_a_file(full_precision_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    result = run("compress", "--src", str(full_precision_dir), "--dst", str(tmp_path / "file" / "out"))
    assert_one_line_error(result, "not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_cache_dir_that_is_a_file(tmp_path):
    (tmp_path / "cache").write_text("x")
    result = run("compress", "--dst", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(result, "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_cache_dir_inside_a_huggingface_source(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (src / "model.safetensors").write_bytes(b"")
    before = tree(src)
    result = run("compress", "--src", str(src), "--dst", str(tmp_path / "out"), "--cache-dir", str(src / "cache"))
    assert_one_line_error(result, "inside --src")
    assert tree(src) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("option", ["--seed=-1", "--seed=4294967296", "--bits=3", "--group-size=48"])
def test_out_of_range_arguments(option, tmp_path):
    assert_one_line_error(run("compress", "--dst", str(tmp_path / "out"), option), option.split("=")[0])
    assert list(tmp_path.iterdir()) == []


def _in_private_mount(tmp_path: Path, mount_options: str, *args: str) -> subprocess.CompletedProcess:
    """Runs the command with `tmp_path / "mnt"` a fresh tmpfs (`mount_options`) in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", str(mount_point)], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    script = f'mount -t tmpfs -o {mount_options} tmpfs "{mount_point}" && exec "$0" "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, COMMAND, *args], capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def test_read_only_destination(full_precision_dir, tmp_path):
    result = _in_private_mount(tmp_path, "ro,size=1m", "compress", "--src", str(full_precision_dir), "--dst",
                               str(tmp_path / "mnt" / "out"))  # fmt: skip
    assert_one_line_error(result, "read-only")


def test_full_disk_while_writing_the_model(full_precision_dir, tmp_path):
    result = _in_private_mount(tmp_path, "size=8m", "compress", "--src", str(full_precision_dir), "--dst",
                               str(tmp_path / "mnt" / "out"), "--method", "rtn")  # fmt: skip
    assert_one_line_error(result, "disk is full")


# --------------------------------------------------------------------------------------------------- interruptions


def test_interrupt_while_the_solver_runs_is_clean(full_precision_dir, tmp_path):
    dst = tmp_path / "out"
    command = [COMMAND, "compress", "--src", str(full_precision_dir), "--dst", str(dst), "--iterations", "400",
               "--patience", "0"]  # fmt: skip
    # Ctrl-C as in a terminal: a background job (`cmd &`, e.g. CI started so) inherits SIGINT ignored, and the
    # command then rightly ignores it too
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint)
    deadline = time.time() + 300
    while not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(8)  # into compress_weights; with 400 iterations each most of the time is spent in the compiled solver
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted" in stderr and "SystemError" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_killed_runs_are_removed_and_others_kept(tiny_ir_dir, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / ".out.partial-stale"
    live = tmp_path / ".out.partial-live"
    foreign = tmp_path / ".out.partial-foreign"
    for path, pid in ((stale, dead.pid), (live, os.getpid()), (foreign, None)):
        path.mkdir()
        if pid is not None:
            import socket

            (path / OWNER_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "time": 0}))
    result = run("compress", "--src", str(tiny_ir_dir), "--dst", str(tmp_path / "out"), "--method", "rtn",
                 "--group-size", "32")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not stale.exists() and live.exists() and foreign.exists()


# ------------------------------------------------------------------------------------------- nothing lost by --dst


def test_overwrite_never_deletes_the_cache_or_a_directory_that_is_not_an_output(full_precision_dir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    cache = work / "cache"
    cache.mkdir()
    (cache / "entry").write_text("cached")
    before = tree(work)
    for dst in (work, work / "."):
        result = run("compress", "--src", str(full_precision_dir), "--dst", str(dst), "--overwrite", "--cache-dir",
                     str(cache), cwd=work)  # fmt: skip
        assert_one_line_error(result, "--dst")
        assert tree(work) == before
    result = run("compress", "--src", str(full_precision_dir), "--dst", ".", "--overwrite", cwd=work)
    assert_one_line_error(result, "not an nncf-hqq output")
    assert tree(work) == before


def test_overwrite_replaces_an_earlier_output(tiny_ir_dir, tmp_path):
    dst = tmp_path / "out"
    src = ["--src", str(tiny_ir_dir), "--group-size", "32"]
    assert run("compress", *src, "--dst", str(dst), "--method", "rtn").returncode == 0
    result = run("compress", *src, "--dst", str(dst), "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((dst / METADATA_FILE).read_text())["method"] == "hqq"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_two_runs_into_one_destination_one_is_refused(full_precision_dir, tmp_path):
    dst = tmp_path / "out"
    command = [COMMAND, "compress", "--src", str(full_precision_dir), "--dst", str(dst), "--method", "rtn"]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=900), p.stderr.read()) for p in (first, second)]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "Traceback" not in refused
    assert any(reason in refused for reason in ("another nncf-hqq run", "appeared", "not empty"))
    assert (dst / METADATA_FILE).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------------------------------------- the export cache


def _fake_export(tmp_path: Path, monkeypatch) -> list[Path]:
    """Replaces the slow export steps by writing a tiny IR; returns the list of exports made."""
    import openvino as ov
    from openvino import opset13 as opset

    made = []

    def export(hf_dir, out_dir, dtype):
        x = opset.parameter([1, 4], ov.Type.f32, name="input_ids")
        weight = opset.constant(list(range(16)), dtype=ov.Type.f32, name="w")
        out_dir.mkdir(parents=True)
        ov.save_model(ov.Model([opset.result(opset.add(x, opset.reshape(weight, [4, 4], False)))], [x]),
                      out_dir / "openvino_model.xml")  # fmt: skip
        (out_dir / "tokenizer.json").write_text("{}")
        made.append(out_dir)

    monkeypatch.setattr("nncf_hqq.cli.export._export_with_optimum", export)
    return made


@pytest.mark.parametrize("damage", ["truncated-bin", "missing-bin", "truncated-xml", "corrupted-bin", "no-manifest"])
def test_damaged_cache_entry_is_exported_again(damage, tmp_path, monkeypatch):
    from nncf_hqq.cli.export import ModelSource
    from nncf_hqq.cli.export import full_precision_ir

    made = _fake_export(tmp_path, monkeypatch)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    source = ModelSource("huggingface", hf_dir, "test model")
    cache = tmp_path / "cache"
    ir = full_precision_ir(source, cache)
    good = ir.with_suffix(".bin").read_bytes()
    assert full_precision_ir(source, cache) == ir and len(made) == 1  # reused while intact
    bin_file, xml_file = ir.with_suffix(".bin"), ir
    if damage == "truncated-bin":
        os.truncate(bin_file, len(good) // 2)
    elif damage == "missing-bin":
        bin_file.unlink()
    elif damage == "truncated-xml":
        os.truncate(xml_file, xml_file.stat().st_size // 2)
    elif damage == "corrupted-bin":
        bin_file.write_bytes(good[:8] + bytes(255 - b for b in good[8:16]) + good[16:])  # same size
    else:
        (ir.parent / MANIFEST_FILE).unlink()
    assert full_precision_ir(source, cache) == ir and len(made) == 2
    assert ir.with_suffix(".bin").read_bytes() == good
    assert sorted(p.name for p in cache.iterdir()) == [ir.parent.name]  # no temporary left


def test_corrupted_cache_entry_heals_through_the_command(tmp_path):
    import torch
    from transformers import LlamaConfig
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    cache = tmp_path / "cache"
    args = ["compress", "--src", str(tmp_path / "hf"), "--group-size", "32", "--cache-dir", str(cache)]
    assert run(*args, "--dst", str(tmp_path / "a")).returncode == 0
    entry = next(cache.iterdir())
    data = bytearray((entry / "openvino_model.bin").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # same size, a corrupted region
    (entry / "openvino_model.bin").write_bytes(bytes(data))
    result = run(*args, "--dst", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "damaged" in result.stderr and "corrupted" in result.stderr
    weights = [(d / "openvino_model.bin").read_bytes() for d in (tmp_path / "a", tmp_path / "b")]
    assert weights[0] == weights[1]


# ---------------------------------------------------------------------------------------------------------- generate


def test_generate_prints_no_warnings(bundled_hqq):
    result = run("generate", str(bundled_hqq), "Hello", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("Hello") and "Path.replace" not in result.stderr + result.stdout


def test_generate_on_a_directory_without_a_model(tmp_path):
    assert_one_line_error(run("generate", str(tmp_path), "Hello"), "not an OpenVINO model directory")
