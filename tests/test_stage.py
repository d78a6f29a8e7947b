"""`headless stage`: a corpus carried to the GPU machine in parts, one call per part, into a folder
that persists between calls; interrupted copies are redone and corrupted parts refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from headless.cli import main
from headless.errors import HeadlessError
from headless.lab.reproduce.stage import check, pull, split_corpus


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder laid out like ../shared/data: one file spanning several parts, small ones, an empty one."""
    root = tmp_path / "shared"
    (root / "enwiki" / "train").mkdir(parents=True)
    (root / "books").mkdir()
    (root / "enwiki" / "train" / "enwiki-000.jsonl.xz").write_bytes(os.urandom(70_000))
    (root / "enwiki" / "train" / "enwiki-001.jsonl.xz").write_bytes(os.urandom(30_000))
    (root / "books" / "gutenberg_en.jsonl.xz").write_bytes(os.urandom(25_000))
    (root / "books" / "empty.tsv").write_bytes(b"")
    return root


def _split(corpus: Path, tmp_path: Path) -> tuple[Path, dict]:
    parts = tmp_path / "repo" / ".data" / "stage"
    manifest = split_corpus([corpus / "enwiki", corpus / "books"], parts, max_mib=40_000 / 2**20, base=corpus)
    return parts, manifest


def _carry(parts: Path, names: list[str], call: Path) -> Path:
    """What one device call carries: the manifest and some parts."""
    call.mkdir(parents=True)
    shutil.copy(parts / "manifest.json", call)
    for name in names:
        shutil.copy(parts / name, call)
    return call


def _same_tree(staged: Path, corpus: Path) -> bool:
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(staged) for p in staged.rglob("*") if p.is_file()) and all(
        (staged / f).read_bytes() == (corpus / f).read_bytes() for f in files)


def test_split_makes_content_addressed_parts_and_a_manifest(corpus, tmp_path):
    parts, manifest = _split(corpus, tmp_path)
    assert [p["bytes"] for p in manifest["parts"]] == [40_000, 40_000, 40_000, 5_000]
    names = [p["name"] for p in manifest["parts"]]
    assert all(n.startswith(f"{i:03d}-{p['sha256'][:12]}") for i, (n, p) in enumerate(zip(names, manifest["parts"])))
    assert {f["path"] for f in manifest["files"]} == {"enwiki/train/enwiki-000.jsonl.xz", "enwiki/train/enwiki-001.jsonl.xz",
                                                       "books/gutenberg_en.jsonl.xz", "books/empty.tsv"}
    assert json.loads((parts / "manifest.json").read_text()) == manifest
    # the same files split again give the same parts, and an earlier split's folder may be replaced
    again = split_corpus([corpus / "enwiki", corpus / "books"], parts, max_mib=40_000 / 2**20, base=corpus)
    assert again == manifest


def test_split_refuses_a_folder_it_did_not_make(corpus, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(HeadlessError, match="did not make it"):
        split_corpus([corpus], mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_parts_carried_one_call_at_a_time_stage_the_corpus(corpus, tmp_path):
    parts, manifest = _split(corpus, tmp_path)
    dest = tmp_path / "gpu" / "headless-stage"
    names = [p["name"] for p in manifest["parts"]]
    for i, name in enumerate(names):
        result = pull(_carry(parts, [name], tmp_path / f"call{i}"), dest, log=lambda *_: None)
        assert result["received"] == [name] and result["complete"] == (i == len(names) - 1)
        if i < len(names) - 1:
            with pytest.raises(HeadlessError, match=f"{len(names) - i - 1} of {len(names)} parts missing"):
                check(dest, parts / "manifest.json")
    data = check(dest, parts / "manifest.json")
    assert data == (dest / "data").absolute() and _same_tree(data, corpus)
    record = json.loads((dest / "received.json").read_text())
    assert sorted(record) == sorted(names) and all(record[n]["sha256"][:12] == n[4:16] for n in names)


def test_an_interrupted_transfer_is_detected_and_redone(corpus, tmp_path):
    parts, manifest = _split(corpus, tmp_path)
    dest = tmp_path / "dest"
    names = [p["name"] for p in manifest["parts"]]
    pull(_carry(parts, names[:2], tmp_path / "first"), dest, log=lambda *_: None)
    # the second call was killed mid-copy: its part truncated in DEST, another one's temporary left over
    (dest / "parts" / names[2]).write_bytes((parts / names[2]).read_bytes()[:1234])
    leftover = dest / "parts" / f".{names[3]}.tmp-999999999"
    leftover.write_bytes(b"half")
    with pytest.raises(HeadlessError, match=names[2]):
        check(dest, parts / "manifest.json")
    said = []
    result = pull(_carry(parts, names[2:], tmp_path / "again"), dest, log=said.append)
    assert result["received"] == names[2:] and result["complete"]
    assert not leftover.exists() and any("incomplete or damaged: copying it again" in s for s in said)
    assert _same_tree(check(dest, parts / "manifest.json"), corpus)
    # a damaged part whose copy is not carried this time is dropped and reported missing
    (dest / "parts" / names[0]).write_bytes(b"x")
    result = pull(_carry(parts, [], tmp_path / "empty-call"), dest, log=said.append)
    assert result["missing"] == [names[0]] and "removed; carry it again" in said[-2]
    with pytest.raises(HeadlessError, match=f"1 of 4 parts missing or damaged \\({names[0]}\\)"):
        check(dest, parts / "manifest.json")


def test_a_corrupted_part_is_refused_with_one_line_before_anything_is_written(corpus, tmp_path, capsys):
    parts, manifest = _split(corpus, tmp_path)
    name = manifest["parts"][1]["name"]
    call = _carry(parts, [name], tmp_path / "call")
    data = bytearray((call / name).read_bytes())
    data[100] ^= 0xFF
    (call / name).write_bytes(bytes(data))
    dest = tmp_path / "dest"
    assert main(["stage", "pull", str(call), str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refusing the corrupted part" in err and name in err
    assert not dest.exists()
    (call / name).write_bytes(bytes(data[:500]))  # truncated in transit
    assert main(["stage", "pull", str(call), str(dest)]) == 2
    assert "500 of 40000 bytes" in capsys.readouterr().err


def test_pull_refuses_a_folder_holding_another_corpus_or_not_its_own(corpus, tmp_path):
    parts, manifest = _split(corpus, tmp_path)
    dest = tmp_path / "dest"
    pull(_carry(parts, [manifest["parts"][0]["name"]], tmp_path / "c1"), dest, log=lambda *_: None)
    (corpus / "books" / "gutenberg_en.jsonl.xz").write_bytes(os.urandom(10))
    other = split_corpus([corpus / "books"], tmp_path / "other", base=corpus)
    with pytest.raises(HeadlessError, match="stages another corpus"):
        pull(tmp_path / "other", dest)
    with pytest.raises(HeadlessError, match="stages another corpus"):
        check(dest, tmp_path / "other" / "manifest.json")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "photo.jpg").write_bytes(b"x")
    with pytest.raises(HeadlessError, match="did not make it"):
        pull(tmp_path / "other", mine)
    assert other["parts"] and (mine / "photo.jpg").read_bytes() == b"x"


def test_cli_split_pull_check(corpus, tmp_path, capsys):
    parts = tmp_path / "stage"
    assert main(["stage", "split", str(corpus / "enwiki"), str(corpus / "books"), "--base", str(corpus),
                 "--parts-dir", str(parts), "--max-mib", "0.05"]) == 0
    assert "4 files" in capsys.readouterr().out
    dest = tmp_path / "dest"
    assert main(["stage", "check", str(dest), str(parts / "manifest.json")]) == 2
    assert "nothing is staged" in capsys.readouterr().err
    assert main(["stage", "pull", str(parts), str(dest)]) == 0
    assert "complete: data_root=" in capsys.readouterr().out
    assert main(["stage", "check", str(dest), str(parts)]) == 0
    assert capsys.readouterr().out.strip() == str((dest / "data").absolute())


def _campaign_call(tmp_path, parts, env_extra):
    """scripts/campaign_call.sh with a stub in place of reproduce_gpu.sh that logs its calls."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    stub, log = tmp_path / "stub.sh", tmp_path / "calls.log"
    stub.write_text(f'echo "WALL=$WALL DATA_ROOT=$DATA_ROOT${{RESULTS_TAG:+ RESULTS_TAG=$RESULTS_TAG}} $*" >> {log}\n'
                    f'[ "$2" = both ] && exit "${{STUB_BOTH_RC:-0}}"; exit 0\n')
    env_extra = dict(env_extra)
    study = env_extra.pop("STUDY", "stage-test")  # a study with no .data/STUDY folder in any checkout
    env = dict(os.environ, STAGE=str(parts), DEST=str(tmp_path / "dest"), REPRODUCE=str(stub),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env_extra)
    seeds = env_extra.pop("SEEDS", "3")
    done = subprocess.run(["bash", str(root / "scripts" / "campaign_call.sh"), study, seeds, "budget_s=9"],
                          env=env, capture_output=True, text=True, timeout=120)
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return done, calls


def test_campaign_call_runs_both_twins_then_the_hf_head_vanilla_in_the_time_left(corpus, tmp_path):
    parts, _ = _split(corpus, tmp_path)
    done, calls = _campaign_call(tmp_path, parts, {"VANILLA_HF": "1", "WALL": "500"})
    assert done.returncode == 0, done.stderr
    data = tmp_path / "dest" / "data"
    assert calls[0] == f"WALL=500 DATA_ROOT={data} stage-test both seed=3 budget_s=9"
    wall, rest = calls[1].split(" ", 1)
    assert 440 <= int(wall.removeprefix("WALL=")) <= 500
    assert rest == (f"DATA_ROOT={data} RESULTS_TAG=hf-head stage-test vanilla seed=3 "
                    "vanilla_pretrain=[objective.loss_implementation=hf] budget_s=9")
    # both twins not finished (stopped at WALL, or failed): no third twin, and the status is kept
    done, calls = _campaign_call(tmp_path, parts, {"VANILLA_HF": "1", "STUB_BOTH_RC": "124"})
    assert done.returncode == 124 and len(calls) == 1
    # too little time left: said, and left to the next call
    done, calls = _campaign_call(tmp_path, parts, {"VANILLA_HF": "1", "WALL": "30"})
    assert done.returncode == 0 and len(calls) == 1 and "run in the next call" in done.stdout
    # without VANILLA_HF: both twins only
    done, calls = _campaign_call(tmp_path, parts, {})
    assert done.returncode == 0 and len(calls) == 1 and calls[0].startswith("WALL=540 ")
    # one twin (the other made in a past session), then the HF-head vanilla
    done, calls = _campaign_call(tmp_path, parts, {"FLAVOUR": "vanilla", "VANILLA_HF": "1"})
    assert done.returncode == 0 and calls[0] == f"WALL=540 DATA_ROOT={data} stage-test vanilla seed=3 budget_s=9"
    assert "RESULTS_TAG=hf-head stage-test vanilla" in calls[1]
    done, calls = _campaign_call(tmp_path, parts, {"FLAVOUR": "twins"})
    assert done.returncode == 2 and not calls and "FLAVOUR must be both, headless, vanilla or hf-head" in done.stdout


def test_campaign_call_runs_a_list_of_seeds_in_turn(corpus, tmp_path):
    """SEED as a list: every seed's twins one after the other in the call's time; FLAVOUR=hf-head
    runs that vanilla alone; a stop ends the list, for the next call to resume."""
    parts, _ = _split(corpus, tmp_path)
    data = tmp_path / "dest" / "data"
    hf = "RESULTS_TAG=hf-head stage-test vanilla seed={} vanilla_pretrain=[objective.loss_implementation=hf] budget_s=9"
    done, calls = _campaign_call(tmp_path, parts, {"SEEDS": "1,2", "VANILLA_HF": "1", "WALL": "500"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert [c.split(" ", 2)[2] for c in calls] == [
        "stage-test both seed=1 budget_s=9", hf.format(1), "stage-test both seed=2 budget_s=9", hf.format(2)]
    assert calls[0] == f"WALL=500 DATA_ROOT={data} stage-test both seed=1 budget_s=9"
    done, calls = _campaign_call(tmp_path, parts, {"SEEDS": "1,2", "FLAVOUR": "hf-head"})
    assert done.returncode == 0 and [c.split(" ", 2)[2] for c in calls] == [hf.format(1), hf.format(2)]
    done, calls = _campaign_call(tmp_path, parts, {"SEEDS": "1,2", "STUB_BOTH_RC": "124"})
    assert done.returncode == 124 and len(calls) == 1  # seed 1 stopped at WALL: seed 2 waits
    done, calls = _campaign_call(tmp_path, parts, {"SEEDS": "1;2"})
    assert done.returncode == 2 and not calls and "SEED must be a seed or a comma list" in done.stdout
    # each item naming its own twin(s): a session's leftovers of several seeds, one command
    done, calls = _campaign_call(tmp_path, parts, {"SEEDS": "2:vanilla,1:hf-head,2:hf-head"})
    assert done.returncode == 0 and [c.split(" ", 2)[2] for c in calls] == [
        "stage-test vanilla seed=2 budget_s=9", hf.format(1), hf.format(2)]
    done, calls = _campaign_call(tmp_path, parts, {"SEEDS": "2:twins"})
    assert done.returncode == 2 and not calls and ":hf-head" in done.stdout


def test_reproduce_gpu_keeps_an_earlier_seed_of_the_same_call(tmp_path):
    """Two seeds in one device call write the same $OUT/STUDY-FLAVOUR.tgz: the second keeps the first's
    piece (a stub in place of `python3 -m headless` writes one piece per seed)."""
    import subprocess
    import sys
    import tarfile

    root = Path(__file__).resolve().parents[1]
    stub = tmp_path / "headless.sh"
    stub.write_text('out=""; seed=""; prev=""\nfor a in "$@"; do [ "$prev" = --output ] && out=$a; '
                    'case $a in seed=*) seed=${a#seed=};; esac; prev=$a; done\n'
                    'mkdir -p "$out" && echo "{}" > "$out/stage-test-vanilla-seed$seed.json"\n')
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OUT=str(out), HEADLESS_CMD=f"bash {stub}", WORK_DIR=str(tmp_path / "work"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for seed in (1, 2):
        done = subprocess.run(["bash", str(root / "scripts" / "reproduce_gpu.sh"), "stage-test", "vanilla",
                               f"seed={seed}"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    with tarfile.open(out / "stage-test-vanilla.tgz") as tar:
        names = set(tar.getnames())
    assert {"stage-test/stage-test-vanilla-seed1.json", "stage-test/stage-test-vanilla-seed2.json"} <= names


def test_reproduce_gpu_brings_back_the_runs_of_its_own_twin_and_seed(tmp_path):
    """Each archive holds the metrics and summaries of the runs its call trained (by their
    config.yaml: flavour, seed, HF's head or not), not of every run in the work directory."""
    import subprocess
    import sys
    import tarfile

    import yaml

    root = Path(__file__).resolve().parents[1]
    runs = tmp_path / "work" / "stage-test" / "runs"
    for name, flavour, seed, impl in [("headless-seed1-a", "headless", 1, "auto"), ("vanilla-seed1-b", "vanilla", 1, "auto"),
                                      ("vanilla-seed1-c", "vanilla", 1, "hf"), ("vanilla-seed2-d", "vanilla", 2, "auto")]:
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text(yaml.safe_dump(
            {"flavour": flavour, "seed": seed, "objective": {"loss_implementation": impl}}))
        (runs / name / "metrics.jsonl").write_text("{}\n")
        (runs / name / "summary.md").write_text(name)
    stub = tmp_path / "headless.sh"
    stub.write_text("exit 0\n")
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OUT=str(out), HEADLESS_CMD=f"bash {stub}", WORK_DIR=str(tmp_path / "work"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def brought(flavour, seed, **extra):
        done = subprocess.run(["bash", str(root / "scripts" / "reproduce_gpu.sh"), "stage-test", flavour, f"seed={seed}"],
                              env=dict(env, **extra), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        archive = next(out.glob("*.tgz"))
        with tarfile.open(archive) as tar:
            names = {Path(n).name for n in tar.getnames() if n.endswith("-metrics.jsonl")}
        archive.unlink()
        return names

    assert brought("vanilla", 1) == {"vanilla-seed1-b-metrics.jsonl"}
    assert brought("vanilla", 1, RESULTS_TAG="hf-head") == {"vanilla-seed1-c-metrics.jsonl"}
    assert brought("both", 1) == {"headless-seed1-a-metrics.jsonl", "vanilla-seed1-b-metrics.jsonl"}
    assert brought("vanilla", 2) == {"vanilla-seed2-d-metrics.jsonl"}


def test_campaign_call_without_staging_needs_the_study_data_carried(tmp_path):
    """No manifest carried: the data must be in .data/STUDY (a study that fits one call); else one
    line and exit 2, before anything runs."""
    (tmp_path / "nostage").mkdir()
    done, calls = _campaign_call(tmp_path, tmp_path / "nostage", {"STUDY": "no-such-study"})
    assert done.returncode == 2 and not calls
    assert "neither" in done.stdout and "manifest.json" in done.stdout


def test_campaign_call_refuses_a_wall_that_is_not_whole_seconds(corpus, tmp_path):
    parts, _ = _split(corpus, tmp_path)
    done, calls = _campaign_call(tmp_path, parts, {"WALL": "9m"})
    assert done.returncode == 2 and not calls and "WALL must be whole seconds" in done.stdout


def test_campaign_call_unpacks_a_campaigns_tokenizers_before_the_piece(corpus, tmp_path):
    """TOKENIZERS=ARCHIVE (a campaign's committed tokenizers.tar.xz) lands in WORK_DIR/STUDY/tokenizers
    before the twins run, so a later session prepares the same data; a missing archive is one line, exit 2."""
    import tarfile

    parts, _ = _split(corpus, tmp_path)
    trained = tmp_path / "trained" / "tokenizers" / "multilingual-wordpiece-64-abc"
    trained.mkdir(parents=True)
    (trained / "tokenizer.json").write_text('{"model": "the campaign\'s"}')
    archive = tmp_path / "tokenizers.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(trained.parent, arcname="tokenizers")
    work = tmp_path / "work"
    done, calls = _campaign_call(tmp_path, parts, {"TOKENIZERS": str(archive), "WORK_DIR": str(work)})
    assert done.returncode == 0 and len(calls) == 1, done.stdout + done.stderr
    landed = work / "stage-test" / "tokenizers" / "multilingual-wordpiece-64-abc" / "tokenizer.json"
    assert landed.read_text() == '{"model": "the campaign\'s"}'
    done, calls = _campaign_call(tmp_path, parts, {"TOKENIZERS": str(tmp_path / "absent.tar.xz"),
                                                   "WORK_DIR": str(work)})
    assert done.returncode == 2 and not calls and "is not a file" in done.stdout


def test_campaign_call_on_a_fresh_machine_says_the_staging_starts_over(corpus, tmp_path):
    """A manifest-only call (resume) on a machine that never staged: the last machine went back; the
    call says so and that every part must be carried again, and runs nothing."""
    parts, _ = _split(corpus, tmp_path)
    only_manifest = tmp_path / "only-manifest"
    only_manifest.mkdir()
    shutil.copy(parts / "manifest.json", only_manifest / "manifest.json")
    done, calls = _campaign_call(tmp_path, only_manifest, {})
    assert done.returncode == 0 and not calls, done.stdout + done.stderr
    assert "a fresh machine" in done.stdout and "carry every part" in done.stdout


def test_split_warns_when_a_part_and_the_checkout_exceed_one_device_call(corpus, tmp_path):
    """A device call carries the working tree with the part: a part that fitted a smaller tree is
    refused there, so `split` says so here, with the --max-mib that fits (and nothing outside git)."""
    import subprocess

    from headless.lab.reproduce.stage import MIB, carry_warning, tree_bytes

    parts, manifest = _split(corpus, tmp_path)
    assert tree_bytes(parts.parent) is None and carry_warning(manifest, parts) is None  # not a checkout
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text(".data/\n")
    (repo / "results.json").write_bytes(os.urandom(3 * MIB))
    assert tree_bytes(parts) == 3 * MIB + len(".data/\n")  # the ignored parts do not count
    assert carry_warning(manifest, parts, limit_mib=64) is None
    warning = carry_warning(manifest, parts, limit_mib=3.02)  # 3 MiB of tree + a 40 kB part: over
    assert warning.startswith("warning: the largest part (0.0 MiB) with this checkout's 3.0 MiB of files")
    assert "more than one device call's 3.02 MiB" in warning and "leaves no room" in warning
    assert carry_warning(manifest, parts, limit_mib=5) is None
    big = {"parts": [{"bytes": 4 * MIB}]}  # 3 MiB of tree + a 4 MiB part against 6.5: room for 2
    assert carry_warning(big, parts, limit_mib=6.5).endswith("split again with --max-mib 2")
