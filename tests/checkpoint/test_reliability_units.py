"""The reliability guards one at a time, without spawning ranks (the end-to-end fault injection is
``tests/checkpoint/test_reliability.py``): the run-directory lock, which checkpoint a run continues from, the
manifest that catches damaged files, retention, atomic writes, finite weights, one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from growth import checkpoint as ckpt
from growth.checkpoint.atomic import atomic_path, write_atomic
from growth.checkpoint.run_checkpoint import _make_room
from growth.checkpoint.run_lock import LOCK_FILE, RunDirInUse, lock_run_dir, release_run_dir
from growth.checkpoint.verify import manifest
from growth.config import ConfigError, GrowthStage, load_config
from growth.data.contrastive_batches import ContrastiveExamples
from growth.data.errors import DataError
from growth.distributed import World, agree_on_failure, run_on_main

ROOT = Path(__file__).parents[2]


# -- the run-directory lock ------------------------------------------------------------------------
HOLDER = """
import sys, time
from growth.checkpoint.run_lock import lock_run_dir
lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_gets_one_line_with_the_holders_pid_and_the_lock_dies_with_it(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirInUse) as refused:
            lock_run_dir(tmp_path)
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and f"kill {holder.pid}" in message and "\n" not in message
        holder.send_signal(signal.SIGKILL)  # kill -9: no chance to clean up
        holder.wait()
        assert (tmp_path / LOCK_FILE).is_file()  # the file stays behind, the lock does not
        lock = lock_run_dir(tmp_path)
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")
        assert lock_run_dir(tmp_path) is lock  # re-entrant within a process
    finally:
        holder.kill()
        release_run_dir(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()  # released: the file is gone, the directory as it was


# -- which checkpoint a run continues from ---------------------------------------------------------
def fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    folder = root / ckpt.tag_for(step)
    folder.mkdir(parents=True)
    (folder / ckpt.RUN_STATE).write_text(ckpt.RunState(step=step).to_json())
    (folder / "mp_rank_00_model_states.pt").write_bytes(os.urandom(1000))
    (folder / ckpt.WEIGHTS).write_bytes(os.urandom(500))
    (folder / "rng_rank0.pt").write_bytes(os.urandom(100))
    if complete:
        (folder / ckpt.COMPLETE).write_bytes(manifest(folder))
    return folder


def test_checkpoints_without_latest_are_continued_from_never_started_over(tmp_path):
    root = tmp_path / "checkpoints"
    assert ckpt.resume_checkpoint(root) == (None, "")
    fake_checkpoint(root, 2)
    newest = fake_checkpoint(root, 4)
    fake_checkpoint(root, 6, complete=False)  # what a killed save leaves
    folder, note = ckpt.resume_checkpoint(root)
    assert folder == newest and "no " in note and "step_00000004" in note
    assert (
        ckpt.resolve_checkpoint(tmp_path) == newest
    )  # --from / init_from / --checkpoint agree with a resume
    (root / "latest").write_text("step_00000002")  # killed between `complete` and `latest`
    folder, note = ckpt.resume_checkpoint(root)
    assert folder == newest and "newer" in note
    (root / "latest").write_text("step_00000004")
    assert ckpt.resume_checkpoint(root) == (newest, "")


def test_only_incomplete_folders_mean_a_fresh_start(tmp_path):
    fake_checkpoint(tmp_path, 2, complete=False)
    assert ckpt.resume_checkpoint(tmp_path) == (None, "")


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\x00\xff\xfe", "is damaged"),
        (b"", "is damaged"),
        (b"step_00000009", "which is missing"),
        (b"step_00000006", "which is incomplete"),
    ],
)
def test_a_damaged_latest_is_one_line_naming_what_to_do(tmp_path, content, words):
    fake_checkpoint(tmp_path, 4)
    fake_checkpoint(tmp_path, 6, complete=False)
    (tmp_path / "latest").write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        ckpt.resume_checkpoint(tmp_path)
    assert (
        words in str(refused.value)
        and "step_00000004" in str(refused.value)
        and "\n" not in str(refused.value)
    )


# -- the manifest catches deleted, truncated and altered files -------------------------------------
@pytest.mark.parametrize(
    "damage, words",
    [
        ("delete", "is missing"),
        ("truncate", "truncated"),
        ("flip", "checksum"),
        ("run_state", "run_state.json is missing"),
        ("garbage_run_state", "run_state.json is unreadable"),
    ],
)
def test_verify_names_the_damaged_file_and_the_checkpoint_before_it(tmp_path, damage, words):
    fake_checkpoint(tmp_path, 2)
    folder = fake_checkpoint(tmp_path, 4)
    ckpt.verify_checkpoint(folder)
    target = folder / "mp_rank_00_model_states.pt"
    if damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:10])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[500] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "run_state":
        (folder / ckpt.RUN_STATE).unlink()
    else:
        (folder / ckpt.RUN_STATE).write_bytes(b"\x00\x01 not json")
    with pytest.raises(ConfigError) as refused:
        ckpt.verify_checkpoint(folder)
    message = str(refused.value)
    assert words in message and "continue from step_00000002" in message and "\n" not in message


def test_a_checkpoint_written_before_manifests_still_needs_its_rng_files(tmp_path):
    folder = fake_checkpoint(tmp_path, 2)
    (folder / ckpt.COMPLETE).write_text("ok\n")
    ckpt.verify_checkpoint(folder, world_size=1)
    with pytest.raises(ConfigError, match="rng_rank1.pt is missing"):
        ckpt.verify_checkpoint(folder, world_size=2)


# -- saving: never over a complete checkpoint; retention -------------------------------------------
def test_a_save_never_overwrites_a_complete_checkpoint_and_clears_a_killed_one(tmp_path):
    complete = fake_checkpoint(tmp_path, 2)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        _make_room(complete)
    killed = fake_checkpoint(tmp_path, 4, complete=False)
    _make_room(killed)
    assert not killed.exists() and complete.is_dir()


def test_keep_checkpoints_deletes_only_older_complete_ones(tmp_path):
    folders = [fake_checkpoint(tmp_path, step) for step in (2, 4, 6, 8)]
    (tmp_path / "step_00000002_universal").mkdir()
    stray = fake_checkpoint(tmp_path, 10, complete=False)  # a save in progress (or killed)
    (tmp_path / "latest").write_text("step_00000008")
    deleted = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert deleted == folders[:2] and not any(f.exists() for f in folders[:2])
    assert not (tmp_path / "step_00000002_universal").exists()
    assert all(f.is_dir() for f in folders[2:]) and stray.is_dir()
    assert ckpt.prune_checkpoints(tmp_path, keep=1) == [folders[2]]  # never the one latest names


def test_keep_checkpoints_removes_what_a_deletion_cut_short_left(tmp_path):
    """A kill between a pruned folder's ``complete`` going and its files going leaves an incomplete folder
    behind the newest checkpoint, at a step no resume saves again: the next prune removes it; an incomplete
    folder ahead of the newest (a save killed, replaced by the next save at its step) stays."""
    folders = [fake_checkpoint(tmp_path, step) for step in (4, 6, 8)]
    cut_short = fake_checkpoint(tmp_path, 2, complete=False)
    (tmp_path / "step_00000002_universal").mkdir()
    ahead = fake_checkpoint(tmp_path, 10, complete=False)
    (tmp_path / "latest").write_text("step_00000008")
    assert ckpt.prune_checkpoints(tmp_path, keep=2) == [cut_short, folders[0]]
    assert not cut_short.exists() and not (tmp_path / "step_00000002_universal").exists()
    assert ckpt.step_folders(tmp_path) == [*folders[1:], ahead]
    assert load_config(overrides=[]).train.keep_checkpoints == 0
    with pytest.raises(ConfigError, match="train.keep_checkpoints must be >= 0"):
        load_config(overrides=["train.keep_checkpoints=-1"])


def test_atomic_writes_leave_no_temporary_behind_on_failure(tmp_path):
    target = tmp_path / "file.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the disk filled up")
    assert list(tmp_path.iterdir()) == []
    write_atomic(target, b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"] and target.read_bytes() == b"whole"


def test_non_finite_weights_are_named():
    layer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    world = World(0, 0, 1)
    assert ckpt.non_finite_weights(layer, world) == []
    with torch.no_grad():
        layer[1].bias[0] = float("inf")
    assert ckpt.non_finite_weights(layer, world) == ["1.bias"]


# -- one line, printed once ------------------------------------------------------------------------
def test_before_the_process_group_only_rank_0_prints(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    agree_on_failure(None, "error: bad key")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    agree_on_failure(None, "error: bad key")
    assert capsys.readouterr().err == "error: bad key\n"


QUIET_RANK = """
import os, time
from growth.distributed import agree_on_failure, stop_request
os.environ.update(RANK="1", WORLD_SIZE="2")
stop_request.install()
sleep = time.sleep
def announced_sleep(seconds):  # the parent signals once this rank waits
    print("waiting", flush=True)
    sleep(seconds)
time.sleep = announced_sleep
agree_on_failure(None, "error: rank 1 stays quiet")
print("returned", flush=True)
"""


def test_a_sigterm_while_a_rank_waits_out_a_failure_prints_no_traceback(tmp_path):
    """The launcher SIGTERMs the other ranks once rank 0 has failed; one waiting in agree_on_failure (before
    the process group, it sleeps 1 s so rank 0 prints first) must end quietly, not with a traceback."""
    script = tmp_path / "quiet_rank.py"
    script.write_text(QUIET_RANK)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout.readline() == "waiting\n"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert (child.returncode, out, err) == (0, "returned\n", "")


def test_the_peer_watcher_has_ended_when_stop_watching_peers_returns(monkeypatch):
    """A watcher thread left inside a store call at interpreter exit aborts a finished run (exit -6,
    "terminate called without an active exception"): stopping must wait for it."""
    from datetime import timedelta

    from growth.distributed import world as world_module

    store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=5))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(store.port))
    world_module.watch_peers(World(1, 1, 2))
    thread = world_module._WATCH.thread
    assert thread.is_alive()
    world_module.stop_watching_peers()
    assert not thread.is_alive() and world_module._WATCH is None


def test_run_on_main_in_a_world_of_one():
    world = World(0, 0, 1)
    assert run_on_main(world, lambda: 7) == 7
    with pytest.raises(ConfigError, match="nope"):
        run_on_main(world, lambda: (_ for _ in ()).throw(ConfigError("nope")))


@pytest.mark.parametrize(
    "content, overrides, words",
    [
        ("[1, 2]", [], "must hold a JSON object"),
        ('{"zero_optimization": 3}', [], "zero_optimization must be an object"),
        ('{"fp16": {"enabled": true}}', [], "enables fp16, which needs a GPU"),
        ("{}", ["train.precision=bf16"], "train.precision=bf16 needs a GPU"),
    ],
)
def test_deepspeed_json_of_the_wrong_shape_is_one_line(tmp_path, content, overrides, words):
    if torch.cuda.is_available() and "GPU" in words:
        pytest.skip("a GPU is available")
    from growth.train.engine import deepspeed_config

    (tmp_path / "ds.json").write_text(content)
    train = load_config(overrides=[f"train.deepspeed_config={tmp_path / 'ds.json'}", *overrides]).train
    with pytest.raises(ConfigError, match=words):
        deepspeed_config(train, 1)


def test_spearman_of_one_pair_or_one_score_is_refused_not_nan():
    from growth.eval.sts import check_rankable, defined

    one = ContrastiveExamples([[5]], [[6]], torch.tensor([3.0]))
    constant = ContrastiveExamples([[5], [7]], [[6], [8]], torch.tensor([2.0, 2.0]))
    for examples, words in ((one, "1 scored pair"), (constant, "every pair has the same score")):
        with pytest.raises(DataError, match=words):
            check_rankable(examples, "f.csv")
    check_rankable(ContrastiveExamples([[5], [7]], [[6], [8]], torch.tensor([1.0, 2.0])), "f.csv")
    with pytest.raises(DataError, match="Spearman is undefined"):
        defined(float("nan"), "f.csv", "raw")


def test_train_tokenizer_into_an_existing_directory_is_one_line(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_tokenizer_tool", ROOT / "tools/train_tokenizer.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    corpus = tmp_path / "a.txt"
    corpus.write_text("some text\n" * 10)
    before = sorted(tmp_path.iterdir())
    assert tool.main(["--input", str(corpus), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out") and "is a directory" in err[0]
    assert sorted(tmp_path.iterdir()) == before


def test_manifest_lists_every_file_with_size_and_checksum(tmp_path):
    folder = fake_checkpoint(tmp_path, 2)
    files = json.loads((folder / ckpt.COMPLETE).read_text())["files"]
    assert set(files) == {ckpt.RUN_STATE, "mp_rank_00_model_states.pt", ckpt.WEIGHTS, "rng_rank0.pt"}
    assert files[ckpt.WEIGHTS][0] == 500


# -- issue 26: every error names the setting and the cause -----------------------------------------
def test_a_vocab_size_below_the_reserved_ids_names_model_vocab_size(tmp_path):
    from growth.data.tokenizer import RESERVED_IDS, train_on_sentences

    with pytest.raises(DataError) as raised:
        train_on_sentences(["to be or not to be"] * 200, tmp_path / "t.model", 3)
    assert str(raised.value).startswith(
        f"model.vocab_size=3 is below the {RESERVED_IDS} ids a trained tokenizer"
    )
    assert not (tmp_path / "t.model").exists()


def test_a_corpus_too_small_for_the_vocabulary_names_both_settings_and_the_limit(tmp_path):
    """A 1-byte corpus was sentencepiece's raw assertion ``input_sentence_size() <= 0 || > 100``."""
    from growth.data.pipeline import train_corpus_tokenizer

    for text, words in (
        ("a", "is too small to train a tokenizer of model.vocab_size=384 pieces: its text yields at most "),
        (
            "hello world " * 300,
            "is too small to train a tokenizer of model.vocab_size=384 pieces: its text yields at most ",
        ),
    ):
        corpus = tmp_path / "tiny.txt"
        corpus.write_text(text)
        config = load_config(overrides=[f"data.corpus={corpus}", "model.vocab_size=384"])
        with pytest.raises(DataError) as raised:
            train_corpus_tokenizer(config.data, 384, tmp_path / "t.model")
        message = str(raised.value)
        assert message.startswith(f"data.corpus={corpus} {words}"), message
        most = int(message.split("yields at most ")[1].split(";")[0])
        assert 0 < most < 384 and "sentencepiece" not in message and "\n" not in message


def test_too_few_pieces_for_the_corpus_characters_names_the_minimum(tmp_path):
    from growth.data.tokenizer import train_on_sentences

    with pytest.raises(DataError) as raised:
        train_on_sentences(
            ["".join(chr(0x4E00 + i) for i in range(60))] * 200,
            tmp_path / "t.model",
            262,
            corpus="data.corpus=x",
        )
    message = str(raised.value)
    assert message.startswith(
        "model.vocab_size=262 is too small for the characters of data.corpus=x: a tokenizer of it needs at least "
    )
    needed = int(message.split("needs at least ")[1].split(" ")[0])
    assert needed > 262


@pytest.mark.parametrize(
    "override", ["train.max_steps=1e100", "train.seed=99999999999999999999", "data.workers=-1e30"]
)
def test_integer_keys_are_bounded(override, capsys):
    from growth.train.run import main

    key = override.split("=")[0]
    with pytest.raises(
        ConfigError, match=f"^{key}=\\S+ is out of range: integer keys hold at most 9,223,372,036,854,775,807"
    ):
        load_config(overrides=[override])
    assert main([override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {key}=") and "out of range" in err[0]


def test_a_short_write_is_a_full_disk_naming_the_settings_folder_and_the_bytes_needed(tmp_path):
    """numpy's ``tofile`` on a full disk says only ``515963 requested and 204800 written``."""
    from growth.train.os_errors import os_error_line

    folders = [("data.cache_dir", tmp_path / "cache"), ("train.out_dir", tmp_path / "run")]
    line = os_error_line(OSError("515963 requested and 204800 written"), folders)
    assert line.startswith(f"error: data.cache_dir={tmp_path / 'cache'}: no space left on the device ("), line
    assert "MB free; the write that failed needed 311,163 bytes more)" in line
    assert "or choose another data.cache_dir" in line and "a file" not in line
    full = OSError(28, "No space left on device", str(tmp_path / "run" / "checkpoints" / "step_2" / "x.pt"))
    line = os_error_line(full, folders)
    assert line.startswith(
        f"error: train.out_dir={tmp_path / 'run'}: {full.filename}: no space left on the device"
    ), line


def test_a_full_token_cache_is_one_line_naming_data_cache_dir(tmp_path):
    """A real full disk: a 256 KB tmpfs as ``data.cache_dir`` (root only) and a 1 MB corpus."""
    from growth.data.pipeline import prepare_tokens
    from growth.data.tokenizer import Tokenizer, sample_sentences, train_on_sentences
    from growth.train.os_errors import os_error_line

    cache = tmp_path / "cache"
    cache.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(cache)]).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        corpus = tmp_path / "corpus.txt"
        corpus.write_text((ROOT / "growth/data/corpus/tinyshakespeare.txt").read_text())
        tokenizer = Tokenizer.load(
            train_on_sentences(sample_sentences([(corpus, "text")], 5000, 0), tmp_path / "t.model", 400)
        )
        config = load_config(overrides=[f"data.corpus={corpus}", f"data.cache_dir={cache}"])
        with pytest.raises(OSError) as raised:
            prepare_tokens(config.data, tokenizer, cache, workers=1)
        line = os_error_line(raised.value, [("data.cache_dir", cache), ("train.out_dir", tmp_path / "run")])
        assert line.startswith(f"error: data.cache_dir={cache}") and "no space left on the device" in line, (
            line
        )
        assert "MB free" in line and "\n" not in line
    finally:
        subprocess.run(["umount", str(cache)], check=False)


# -- issue 26, the smaller items -------------------------------------------------------------------
def test_growth_point_checkpoints_are_exempt_from_keep_checkpoints(tmp_path):
    """``train.keep_checkpoints=1`` deleted the small model's checkpoint the README says is kept."""
    from growth.train.callbacks import Checkpointer

    folders = [fake_checkpoint(tmp_path, step) for step in (2, 4, 6, 8)]
    (tmp_path / "latest").write_text("step_00000008")
    assert ckpt.prune_checkpoints(tmp_path, keep=1, keep_steps=[4]) == [folders[0], folders[2]]
    assert folders[1].is_dir() and folders[3].is_dir()
    config = load_config(overrides=["train.keep_checkpoints=1", "train.max_steps=20"])
    config.train.growth = [
        GrowthStage(at_step=4, model={"n_layers": 6}),
        GrowthStage(at_step=9, model={"n_layers": 8}),
    ]
    assert Checkpointer(tmp_path, 2, config).growth_points == [4, 9]


def test_the_entry_point_runs_as_the_readme_writes_it():
    """``launch/pretrain.py --help`` (README) was rc 126: the file was not executable."""
    path = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        ["launch/pretrain.py", "--help"], cwd=ROOT, env=path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "config keys" in result.stdout and "train.max_steps=" in result.stdout


def test_compare_runs_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    spec = importlib.util.spec_from_file_location("compare_runs_tool", ROOT / "tools/compare_runs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    run = tmp_path / "run"
    with SummaryWriter(str(run / "tensorboard")) as writer:
        for step in (1, 2, 3):
            writer.add_scalar("val/loss", 5.0 - step, step)
    (tmp_path / "a_file").write_text("")
    for out in ("/proc/compare_runs.png", str(tmp_path / "a_file" / "plot.png")):
        assert tool.main([str(run), "--x", "steps", "--out", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert (
            len(err) == 1 and err[0].startswith("error: ") and f"nothing was written to --out {out}" in err[0]
        ), err
        assert "Traceback" not in "\n".join(err)
    assert tool.main([str(run), "--x", "steps", "--out", str(tmp_path / "ok.png")]) == 0
    assert (tmp_path / "ok.png").read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob("ok.png.tmp*"))
