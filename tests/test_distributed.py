"""Data parallelism on real gloo process groups (2 CPU processes started by the tests themselves).

The central check: W ranks x micro-batch B train EXACTLY like 1 process x micro-batch W*B (global
negatives), or like 1 process summing W separate micro-batch losses (rank negatives), for DDP and
FSDP2, with and without gradient accumulation, including checkpoints moved between world sizes.
One 2-process job runs every scenario (process start-up dominates the cost); references are
computed in the pytest process without any process group.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from headless.errors import HeadlessError
from headless.losses import cwt_loss
from headless.train import distributed as hd

WORLD, B, L, V, STEPS, SAVE_AT = 2, 2, 12, 96, 3, 2
SCENARIOS = [  # (architecture, strategy, negatives, grad_accum)
    ("neox", "ddp", "global", 1),
    ("neox", "fsdp2", "global", 2),
    ("bert", "fsdp2", "global", 1),
    ("bert", "ddp", "global", 2),
    ("neox", "ddp", "rank", 1),
    ("neox", "fsdp2", "rank", 1),
    ("bert", "fsdp2", "rank", 2),
]
RESUMES = [("neox", "fsdp2", "global", 2), ("bert", "ddp", "global", 2)]  # world 1 -> world 2
TO_WORLD1 = ("bert", "fsdp2", "global", 1)  # world 2 -> world 1


class TinyLM(nn.Module):
    """A headless HF backbone whose forward returns the CWT loss (as the trainer's model does)."""

    def __init__(self, arch: str):
        super().__init__()
        import transformers as tf

        shape = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
        if arch == "neox":
            self.hf = tf.GPTNeoXModel(tf.GPTNeoXConfig(**shape, rotary_pct=0.25))
        else:
            cfg = tf.BertConfig(**shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
            self.hf = tf.BertModel(cfg, add_pooling_layer=False)
        self.loss_group = None

    def forward(self, input_ids, labels):
        hidden = self.hf(input_ids=input_ids).last_hidden_state
        return cwt_loss(hidden, labels, self.hf.get_input_embeddings().weight, reduction="sum",
                        group=self.loss_group, allow_empty=True)


def make_data(arch: str, accum: int, seed: int = 0):
    """Per step: (inputs, labels) of shape [accum, WORLD*B, L]; BERT masks give unequal rank counts."""
    gen = torch.Generator().manual_seed(seed)
    steps = []
    for _ in range(STEPS):
        ids = torch.randint(2, V, (accum, WORLD * B, L), generator=gen)
        if arch == "neox":
            labels = torch.cat([ids[..., 1:], torch.full_like(ids[..., :1], -100)], -1)
            steps.append((ids, labels))
        else:
            mask = torch.rand(ids.shape, generator=gen) < 0.3
            steps.append((ids.masked_fill(mask, 1), ids.masked_fill(~mask, -100)))
    return steps


def train_step(wrapped, model, opt, micros, world_size):
    """The trainer's step: sum-reduced losses scaled by world_size / global target count."""
    local = sum(int((lab != -100).sum()) for _, lab in micros)
    total = int(hd.all_reduce(torch.tensor([local])).item())
    scale = hd.dp_loss_scale(total, world_size)
    loss_sum = torch.zeros(())
    for i, (x, lab) in enumerate(micros):
        with hd.no_sync(wrapped, i < len(micros) - 1):
            out = wrapped(x, lab)
            (out.loss * scale).backward()
        loss_sum += out.loss.detach()
    norm = hd.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(hd.all_reduce(loss_sum)) / total, norm


def make_optimizer(model):
    # eps 1e-3: attention key biases get mathematically-zero, numerically-noise gradients, which
    # AdamW with a tiny eps would amplify into lr-sized, summation-order-dependent updates.
    return torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-3, weight_decay=0.01)


def new_run(arch, seed=1000):
    torch.manual_seed(seed)
    model = TinyLM(arch)
    return model, make_optimizer(model)


def reference(spec):
    """One process, micro-batch WORLD*B: global negatives = the whole micro-batch; rank negatives =
    WORLD separate loss calls accumulated (exactly what each rank sees)."""
    arch, _, negatives, accum = spec
    model, opt = new_run(arch)
    losses, norms, ckpt = [], [], None
    for step, (x, lab) in enumerate(make_data(arch, accum)):
        if negatives == "global":
            micros = [(x[m], lab[m]) for m in range(accum)]
        else:
            micros = [(x[m, r * B:(r + 1) * B], lab[m, r * B:(r + 1) * B]) for m in range(accum) for r in range(WORLD)]
        loss, norm = train_step(model, model, opt, micros, 1)
        losses.append(loss)
        norms.append(norm)
        if step + 1 == SAVE_AT:
            ckpt = (hd.full_model_state_dict(model), hd.full_optimizer_state_dict(model, opt))
    return {"losses": losses, "norms": norms, "weights": hd.full_model_state_dict(model), "ckpt": ckpt}


def _rank_micros(steps, rank):
    return [[(x[m, rank * B:(rank + 1) * B], lab[m, rank * B:(rank + 1) * B]) for m in range(x.shape[0])]
            for x, lab in steps]


def _run(spec, env, start=0, ckpt=None):
    arch, strategy, negatives, accum = spec
    model, _ = new_run(arch, seed=1000 + env.rank)  # different per rank: wrap_model must sync rank 0's
    wrapped = hd.wrap_model(model, strategy, env)
    model.loss_group = hd.loss_group(negatives, env)
    opt = make_optimizer(model)  # after wrapping: FSDP2 replaces the parameters
    if ckpt is not None:
        hd.load_full_model_state_dict(wrapped, ckpt[0] if env.is_main else {})
        hd.load_full_optimizer_state_dict(wrapped, opt, ckpt[1] if env.is_main else {})
    out = {"losses": [], "norms": []}
    for step, micros in enumerate(_rank_micros(make_data(arch, accum), env.rank)[start:], start):
        loss, norm = train_step(wrapped, model, opt, micros, env.world_size)
        out["losses"].append(loss)
        out["norms"].append(norm)
        if step + 1 == SAVE_AT:
            out["ckpt"] = (hd.full_model_state_dict(model), hd.full_optimizer_state_dict(wrapped, opt))
    out["weights"] = hd.full_model_state_dict(model)
    out["unsynced"] = _unsynced_gradients(wrapped, model, _rank_micros(make_data(arch, 1, seed=1), env.rank)[0][0])
    return out


def _unsynced_gradients(wrapped, model, micro):
    """True when a backward under no_sync left rank-local gradients (no communication happened)."""
    with hd.no_sync(wrapped, True):
        wrapped(*micro).loss.backward()
    if hd.is_sharded(model):  # FSDP2 keeps them unsharded, outside .grad, until the synced backward
        unsynced = all(p.grad is None for p in model.parameters())
    else:
        local = model.hf.get_input_embeddings().weight.grad.clone()
        unsynced = not torch.equal(local, hd.all_reduce(local.clone(), "mean"))
    model.zero_grad(set_to_none=True)
    return unsynced


def _bf16_run(env):
    """FSDP2 mixed precision: bf16 compute inside the blocks, fp32 master weights outside."""
    model, _ = new_run("neox")
    wrapped = hd.wrap_model(model, "fsdp2", env, mixed_precision="bf16")
    model.loss_group = hd.loss_group("global", env)
    opt, seen = make_optimizer(model), []
    mlp = model.hf.layers[0].mlp.dense_h_to_4h
    mlp.register_forward_hook(lambda m, i, o: seen.append((m.weight.dtype, o.dtype)))
    losses = [train_step(wrapped, model, opt, m, env.world_size)[0] for m in _rank_micros(make_data("neox", 1), env.rank)]
    return {"losses": losses, "compute": seen[0], "master": {p.dtype for p in model.parameters()}}


def _job(ckpts):
    env = hd.init_distributed("cpu", timeout_s=60)
    assert (env.world_size, env.backend, env.local_rank) == (WORLD, "gloo", env.rank)
    results = {spec: _run(spec, env) for spec in SCENARIOS}
    for spec in RESUMES:
        results[("resume", *spec)] = _run(spec, env, start=SAVE_AT, ckpt=ckpts[spec])
    results["bf16"] = _bf16_run(env)
    return results if env.is_main else None


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: extra intra-op threads only contend with the other tests' processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(one_thread):
    refs = {spec: reference(spec) for spec in {*SCENARIOS, *RESUMES, TO_WORLD1}}
    t0 = time.monotonic()
    job = hd.spawn(_job, WORLD, {spec: refs[spec]["ckpt"] for spec in RESUMES}, timeout_s=240)[0]
    print(f"2-process job: {time.monotonic() - t0:.1f}s")
    return refs, job


def assert_same_weights(a: dict, b: dict, atol=2e-5):
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("spec", SCENARIOS, ids=lambda s: "-".join(map(str, s)))
def test_two_ranks_train_like_one_process(runs, spec):
    refs, job = runs
    ref, got = refs[spec], job[spec]
    assert got["losses"] == pytest.approx(ref["losses"], rel=1e-5)
    assert got["norms"] == pytest.approx(ref["norms"], rel=1e-4)
    assert_same_weights(got["weights"], ref["weights"])
    init = new_run(spec[0])[0].state_dict()  # the weights moved, so their equality is not trivial
    assert max((ref["weights"][k] - init[k]).abs().max() for k in init) > 1e-2


def test_global_negatives_change_the_loss(runs):
    """Sanity of the matrix above: the two modes are different objectives on the same data."""
    refs, _ = runs
    glob, rank = refs[("neox", "ddp", "global", 1)], refs[("neox", "ddp", "rank", 1)]
    assert glob["losses"][0] > rank["losses"][0] + 0.1  # twice the negatives: a harder retrieval


def test_rank_negatives_loss_is_mean_of_per_rank_losses(runs):
    """The paper's setting: each device's micro-batch is its own negative set; equal counts (CLM)."""
    _, job = runs
    model, _ = new_run("neox")
    x, lab = make_data("neox", 1)[0]
    with torch.no_grad():
        per_rank = [model(x[0, r * B:(r + 1) * B], lab[0, r * B:(r + 1) * B]) for r in range(WORLD)]
    mean = sum(float(o.loss / o.num_targets) for o in per_rank) / WORLD
    for strategy in ("ddp", "fsdp2"):
        assert job[("neox", strategy, "rank", 1)]["losses"][0] == pytest.approx(mean, rel=1e-5)


@pytest.mark.parametrize("spec", [s for s in SCENARIOS if s[3] == 1 and s[2] == "global"],
                         ids=lambda s: s[1])
def test_no_sync_skips_gradient_communication(runs, spec):
    assert runs[1][spec]["unsynced"]


def test_fsdp2_bf16_mixed_precision(runs):
    refs, job = runs
    got = job["bf16"]
    assert got["compute"] == (torch.bfloat16, torch.bfloat16) and got["master"] == {torch.float32}
    ref = refs[("neox", "ddp", "global", 1)]  # same data and init, fp32
    assert got["losses"] == pytest.approx(ref["losses"], rel=1e-2)
    assert got["losses"] != pytest.approx(ref["losses"], rel=1e-7)  # bf16 really was used


@pytest.mark.parametrize("spec", RESUMES, ids=lambda s: s[1])
def test_checkpoint_from_one_process_resumes_on_two(runs, spec):
    """Model AND optimizer state (Adam moments, step) saved at world 1 continue identically at world 2."""
    refs, job = runs
    got = job[("resume", *spec)]
    assert got["losses"] == pytest.approx(refs[spec]["losses"][SAVE_AT:], rel=1e-5)
    assert_same_weights(got["weights"], refs[spec]["weights"])


def test_checkpoint_from_two_processes_resumes_on_one(runs):
    refs, job = runs
    sd, osd = job[TO_WORLD1]["ckpt"]
    ref_sd, ref_osd = refs[TO_WORLD1]["ckpt"]
    assert_same_weights(sd, ref_sd)
    assert osd["param_groups"][0]["params"] == ref_osd["param_groups"][0]["params"]  # names, not ids
    model, opt = new_run("bert", seed=7)
    hd.load_full_model_state_dict(model, sd)
    hd.load_full_optimizer_state_dict(model, opt, osd)
    assert_same_weights(hd.full_model_state_dict(model), sd, atol=0)
    x, lab = make_data("bert", 1)[SAVE_AT]
    train_step(model, model, opt, [(x[0], lab[0])], 1)
    assert_same_weights(hd.full_model_state_dict(model), refs[TO_WORLD1]["weights"])


# -- failures end the job with the failing rank's error, never a hang --------------------------

def _raise_on_rank1():
    env = hd.init_distributed("cpu", timeout_s=60)
    x = torch.ones(4)
    for step in range(100):
        if env.rank == 1 and step == 3:
            raise ValueError("corrupt shard at step 3")
        hd.all_reduce(x)


def _stall_on_rank1():
    env = hd.init_distributed("cpu", timeout_s=3)
    if env.rank == 1:
        time.sleep(120)
    hd.all_reduce(torch.ones(4))


def test_failing_rank_stops_the_job_with_its_error():
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 1: ValueError: corrupt shard at step 3"):
        hd.spawn(_raise_on_rank1, WORLD, timeout_s=90, grace_s=30)
    assert time.monotonic() - t0 < 60  # rank 0's collective fails as soon as its peer is gone


def test_stalled_rank_hits_the_collective_timeout():
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)rank 0: .*rank 1: killed"):
        hd.spawn(_stall_on_rank1, WORLD, timeout_s=90, grace_s=2)
    assert time.monotonic() - t0 < 60  # the 3 s group timeout fired, not the 90 s launcher one


# -- single process: the same API, no process group -------------------------------------------

def test_single_process_is_a_plain_run(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    env = hd.init_distributed("cpu")
    assert (env.rank, env.world_size, env.backend, env.is_main) == (0, 1, None, True)
    model = nn.Linear(2, 2)
    assert hd.wrap_model(model, "fsdp2", env) is model
    assert hd.loss_group("global", env) is None
    assert hd.all_reduce(torch.tensor([3.0]), "mean").item() == 3.0
    assert hd.gather_object({"a": 1}) == [{"a": 1}]
    with pytest.raises(HeadlessError, match="negatives"):
        hd.loss_group("batch", env)
    with pytest.raises(HeadlessError, match="distributed"):
        hd.wrap_model(model, "deepspeed", env)


def test_transformer_blocks_found_in_hf_models():
    for arch, cls in (("neox", "GPTNeoXLayer"), ("bert", "BertLayer")):
        blocks = hd.transformer_blocks(TinyLM(arch))
        assert [type(b).__name__ for b in blocks] == [cls, cls]


def test_mixed_precision_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert hd.mixed_precision_dtype("auto", cpu) is None
    assert hd.mixed_precision_dtype("auto", cuda) is torch.bfloat16
    assert hd.mixed_precision_dtype("fp32", cuda) is None
    assert hd.mixed_precision_dtype("fp16", cpu) is torch.float16
    with pytest.raises(HeadlessError):
        hd.mixed_precision_dtype("int8", cpu)
