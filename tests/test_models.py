"""HF models in headless / vanilla flavours: no head at all when headless, fair vanilla heads."""

import dataclasses

import pytest
import torch

from headless.config import load_config
from headless.errors import HeadlessError
from headless.models import attach_lm_head, build_model, count_parameters, head_parts

ENCODERS = ["bert", "roberta", "xlm-roberta", "modernbert", "distilbert"]
DECODERS = ["gpt-neox", "llama", "gpt2"]
SMALL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64", "data.seq_len=32"]


def _config(arch, flavour):
    kind = "mlm" if arch in ENCODERS else "clm"
    return load_config("tiny", flavour=flavour, overrides=SMALL + [f"model.architecture={arch}", f"objective.kind={kind}"])


@pytest.mark.parametrize("arch", ENCODERS + DECODERS)
def test_headless_has_no_vocabulary_head_and_vanilla_head_matches_hf(arch):
    vocab = 100
    torch.manual_seed(0)
    headless = build_model(_config(arch, "headless").model, _config(arch, "headless").objective, "cwt", vocab, 0, 2)
    vanilla = build_model(_config(arch, "vanilla").model, _config(arch, "vanilla").objective, "ce", vocab, 0, 2)
    assert not headless.has_head and vanilla.has_head
    assert headless.hf.get_output_embeddings() is None if hasattr(headless.hf, "get_output_embeddings") else True
    rows = headless.input_embedding_weight().shape[0]
    assert rows >= vocab and rows % 64 == 0  # padded to a multiple of 64 for fast matmuls
    # the vanilla head applied to selected positions equals HF's own logits there
    vanilla.eval()
    ids = torch.randint(3, vocab, (2, 16))
    parts = head_parts(vanilla.hf)
    ours = parts.projection(parts.transform(vanilla.hidden_states(ids)))
    assert torch.allclose(ours, vanilla.hf(input_ids=ids).logits, atol=1e-5)
    # the headless model computes a loss with no head parameter involved
    labels = torch.full((2, 16), -100)
    labels[:, 3:9] = ids[:, 3:9]
    out = headless(ids, labels)
    out.loss.backward()
    assert out.num_targets == 12 and torch.isfinite(out.loss)
    assert headless.input_embedding_weight().grad is not None


def test_parameter_counts_separate_embeddings():
    config = _config("gpt-neox", "vanilla")
    model = build_model(config.model, config.objective, "ce", 100, 0, 2)
    counts = count_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embedding"] == 128 * 32  # input embedding only; the untied head is compute


def test_attach_head_copies_embeddings_untied():
    config = _config("gpt-neox", "headless")
    model = build_model(config.model, config.objective, "cwt", 100, 0, 2)
    lm = attach_lm_head(model.backbone)
    emb, head = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
    assert torch.equal(emb, head) and emb.data_ptr() != head.data_ptr()
    ids = torch.randint(0, 100, (1, 8))
    assert torch.allclose(lm.gpt_neox(ids).last_hidden_state, model.hidden_states(ids))


def test_tokenizer_larger_than_model_is_rejected():
    config = load_config("tiny", overrides=SMALL + ["model.vocab_size=50"])
    with pytest.raises(HeadlessError, match="smaller than the tokenizer"):
        build_model(config.model, config.objective, "cwt", 100)


def test_nce_has_a_separate_target_matrix():
    config = _config("bert", "headless")
    model = build_model(config.model, config.objective, "nce", 100, 0, 2)
    assert model.target_embedding is not None
    assert model.target_embedding.weight.data_ptr() != model.input_embedding_weight().data_ptr()


class _CountNonzero(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts aten.nonzero calls: a selection whose size the host must read."""

    calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten.nonzero:
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("loss", ["cwt", "ce", "ce+cwt", "nce"])
def test_static_masking_gathers_the_same_loss_and_gradients_as_selection(loss):
    """objective.masking=static gathers the loss positions with static shapes (no nonzero) and
    scores the empty slots of short rows as ignored: in float64, the same loss and gradients as the
    reference path (Bernoulli config: selected positions, reference implementations)."""
    from headless.objectives import gather_static_positions, mlm_mask, static_mask_count

    flavour = "vanilla" if loss.startswith("ce") else "headless"
    static = load_config("tiny", flavour=flavour, overrides=SMALL + ["model.dropout=0", f"objective.loss={loss}",
                                                                     "objective.masking=static"])
    ref_cfg = load_config("tiny", flavour=flavour, overrides=SMALL + ["model.dropout=0", f"objective.loss={loss}",
                                                                      "objective.loss_implementation=reference"])
    torch.manual_seed(0)
    model = build_model(static.model, static.objective, loss, 100, 0, 2).double()
    reference = build_model(ref_cfg.model, ref_cfg.objective, loss, 100, 0, 2).double()
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(4, 100, (3, 32))
    ids[2, 3:] = 0  # a row with 3 eligible positions, fewer than the 5 the static count asks for
    _, labels = mlm_mask(ids, mask_token_id=3, vocab_size=100, special_token_ids=[0, 1, 2], masking="static", key=1)
    k = static_mask_count(32, 0.15)
    assert k == 5 and (labels != -100).sum(dim=1).tolist() == [5, 5, 3]
    results, selections = [], []
    for m in (model, reference):
        m.zero_grad()
        with _CountNonzero() as count:
            out = m(ids, labels)
            out.loss.backward()
        selections.append(count.calls)
        results.append((out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    assert selections[0] == 0 < selections[1]  # no data-dependent selection (a host sync on GPU)
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=1e-10)
    assert int(a.num_targets) == int(b.num_targets) == 13
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=0, atol=1e-10, msg=name)
    # the gather itself: each row's positions in order, then ignored slots
    hidden = torch.arange(3 * 32, dtype=torch.float64).view(3, 32, 1)
    outputs, targets = gather_static_positions(hidden, labels, k)
    assert outputs.shape == (15, 1) and targets.shape == (15,)
    assert targets[-2:].tolist() == [-100, -100]
    kept = labels != -100
    assert torch.equal(targets[targets != -100], labels[kept])
    assert torch.equal(outputs[targets != -100, 0], hidden[kept][:, 0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_static_masking_loss_has_no_host_sync_on_gpu():
    """The cross-entropy loss of a static-masked MLM batch never makes the host wait for the GPU,
    forward and backward (CWT's still does once, in torch.unique)."""
    from headless.objectives import mlm_mask

    cfg = load_config("tiny", flavour="vanilla", overrides=SMALL + ["objective.masking=static"])
    model = build_model(cfg.model, cfg.objective, "ce", 100, 0, 2).cuda()
    model.with_accuracy = False  # as on the trainer's ordinary steps
    ids = torch.randint(4, 100, (8, 32))
    _, labels = mlm_mask(ids, mask_token_id=3, vocab_size=100, special_token_ids=[0, 1, 2], masking="static", key=1)
    ids, labels = ids.cuda(), labels.cuda()
    model.loss(model.hidden_states(ids), labels).loss.backward()  # warm-up: Triton autotuning synchronises
    hidden = model.hidden_states(ids)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = model.loss(hidden, labels)
        out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss).item() and out.num_targets.item() == 8 * round(0.15 * 32)


# (architecture, loss, flavour, loss implementation): every shape static, no host read
SYNC_FREE = [("bert", "cwt", "headless", "reference"), ("bert", "ce", "vanilla", "reference"),
             ("gpt-neox", "cwt", "headless", "reference"), ("gpt-neox", "ce", "vanilla", "chunked"),
             ("gpt-neox", "cwt", "headless", "bounded"), ("bert", "cwt", "headless", "bounded")]


def _sync_free_case(arch, loss, flavour, impl, extra=()):
    from headless.objectives import clm_labels, mlm_mask

    kind = "mlm" if arch in ENCODERS else "clm"
    cfg = load_config("tiny", flavour=flavour, overrides=SMALL + [
        f"model.architecture={arch}", f"objective.kind={kind}", "objective.masking=static",
        f"objective.loss_implementation={impl}", *extra])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.objective, loss, 100, 0, 2).double()
    ids = torch.randint(4, 100, (4, 32))
    if kind == "mlm":
        ids, labels = mlm_mask(ids, mask_token_id=3, vocab_size=100, special_token_ids=[0, 1, 2], masking="static",
                               key=1)
    else:
        ids[1, 10] = 2  # an EOS: no position predicts across it
        from headless.objectives import document_ids_from_eos

        labels = clm_labels(ids, document_ids=document_ids_from_eos(ids, 2))
    return model, ids, labels


@pytest.mark.parametrize("arch,loss,flavour,impl", SYNC_FREE)
def test_a_sync_free_model_is_one_graph_with_the_eager_loss_and_gradients(arch, loss, flavour, impl):
    """Backbone and loss trace as ONE graph (fullgraph: any data-dependent size or host read would
    break it), and the compiled forward and backward equal the eager ones."""
    model, ids, labels = _sync_free_case(arch, loss, flavour, impl)
    assert model.sync_free
    results = []
    model.zero_grad()
    with _CountNonzero() as count:
        model(ids, labels).loss.backward()
    assert count.calls == 0
    for run in (model, torch.compile(model, backend="aot_eager", fullgraph=True)):
        model.zero_grad()
        out = run(ids, labels)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (eager, ge), (compiled, gc) = results
    torch.testing.assert_close(compiled.loss, eager.loss, rtol=1e-10, atol=1e-10)
    assert int(compiled.num_targets) == int(eager.num_targets) == int((labels != -100).sum())
    assert ge.keys() == gc.keys() and ge
    for name in ge:
        torch.testing.assert_close(gc[name], ge[name], rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("loss,impl", [("cwt", "reference"), ("cwt", "auto"), ("ce", "auto")])
def test_clm_scores_every_position_and_equals_the_selected_ones(loss, impl):
    """CLM is static too: every position scored, the last and cross-document ones zeroed, with the
    value and gradients of the selected positions and no selection."""
    from headless.losses import cwt_loss, vanilla_ce_loss
    from headless.objectives import select_loss_positions

    model, ids, labels = _sync_free_case("gpt-neox", loss, "headless" if loss == "cwt" else "vanilla", impl)
    assert model.static_shapes
    hidden = model.hidden_states(ids).detach().requires_grad_()
    with _CountNonzero() as count:
        out = model.loss(hidden, labels)
    assert count.calls == 0
    (got,) = torch.autograd.grad(out.loss, hidden)
    o, t = select_loss_positions(hidden, labels)
    if loss == "cwt":
        ref = cwt_loss(o, t, model.input_embedding_weight(), implementation="reference", reduction="sum")
    else:
        parts = head_parts(model.hf)
        ref = vanilla_ce_loss(o, t, parts.projection.weight, implementation="reference", reduction="sum")
    (want,) = torch.autograd.grad(ref.loss, hidden)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=1e-9)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert int(out.num_targets) == int(ref.num_targets) == 4 * 31 - 1
    assert float(out.accuracy) == float(ref.accuracy)


@pytest.mark.parametrize("arch,loss,impl,extra,region", [
    ("gpt-neox", "cwt", "reference", [], "model"),
    ("bert", "cwt", "reference", [], "model"),
    ("bert", "ce", "chunked", [], "model"),
    ("gpt-neox", "cwt", "auto", [], "model"),            # static CLM: auto is the measured one-graph path
    ("gpt-neox", "ce", "auto", [], "model"),
    ("gpt-neox", "cwt", "triton", [], "backbone"),       # torch.unique: a data-dependent size
    ("gpt-neox", "cwt", "bounded", [], "model"),         # de-duplicated into a static room
    ("bert", "cwt", "bounded", ["objective.max_negatives=8"], "backbone"),
    ("bert", "cwt", "auto", [], "model"),                # static MLM: auto is the measured one-graph path
    ("bert", "ce", "auto", [], "model"),
    ("bert", "cwt", "auto", ["objective.masking=bernoulli"], "backbone"),
    ("bert", "cwt", "reference", ["objective.masking=bernoulli"], "backbone"),  # a data-dependent count
    ("bert", "cwt", "reference", ["objective.max_negatives=8"], "backbone"),  # sampled on the host
])
def test_compile_model_takes_backbone_and_loss_together_only_when_nothing_needs_the_host(
        arch, loss, impl, extra, region):
    model, ids, _ = _sync_free_case(arch, loss, "headless" if loss == "cwt" else "vanilla", impl, extra)
    assert model.compiled_region is None
    assert model.compile_model("default", *ids.shape) is False  # no CUDA graphs on the CPU
    assert model.compiled_region == region and model.sync_free == (region == "model")
    whole = model._compiled_call_impl is not None
    assert whole == (region == "model") and (model.backbone._compiled_call_impl is not None) == (not whole)
    resolved = "reference" if impl == "auto" and region == "model" else impl
    assert model.objective.loss_implementation == resolved


@pytest.mark.parametrize("arch,loss", [("gpt-neox", "cwt"), ("gpt-neox", "ce"), ("bert", "cwt"), ("bert", "ce")])
def test_auto_keeps_the_eager_loss_above_the_measured_bounds(arch, loss):
    """CWT's K x K scores grow as K² (past CAPTURE_MAX_ROWS scored rows per micro-batch: Pythia-70M
    at 64 x 2048 would need 64 GiB of float32 scores), the vanilla head's dense logits as K x V (past
    CAPTURE_MAX_LOGITS): beyond them `auto` is not turned into the one-graph path."""
    from headless.models import CAPTURE_MAX_LOGITS, CAPTURE_MAX_ROWS
    from headless.objectives import static_mask_count

    model, _, _ = _sync_free_case(arch, loss, "headless" if loss == "cwt" else "vanilla", "auto")
    per_row = 2048 if arch == "gpt-neox" else static_mask_count(2048, model.objective.mask_prob)
    if loss == "cwt":
        fits = CAPTURE_MAX_ROWS // per_row
    else:
        fits = CAPTURE_MAX_LOGITS // (per_row * model.hf.get_output_embeddings().weight.shape[0])
        assert fits * per_row > CAPTURE_MAX_ROWS  # the head's bound is not the CWT one
    assert model.captured_implementation(fits, 2048) == "reference"
    if loss == "cwt":  # above: eager, unless objective.unique_bound asks for the bounded path
        assert model.captured_implementation(fits + 1, 2048) is None
        model.objective = dataclasses.replace(model.objective, unique_bound=64)
        assert model.captured_implementation(fits + 1, 2048) == "bounded"
        fits = CAPTURE_MAX_LOGITS // (per_row * 128)  # until its K x room scores pass the head's bound
        assert model.captured_implementation(fits, 2048) == "bounded"
        model.objective = dataclasses.replace(model.objective, unique_bound=None)
    assert not model.captures_by_default(fits + 1, 2048)
    assert model.compile_model("default", fits + 1, 2048) is False
    assert model.compiled_region == "backbone" and model.objective.loss_implementation == "auto"


def test_auto_captures_the_bounded_path_only_while_its_room_is_smaller_than_the_rows():
    """K x room < K x K: with V >= K (no bound) the room is K and "bounded" would score as many pairs
    as the K x K reference it replaces, so `auto` stays eager; a bound below K captures it."""
    from headless.loss_kinds import loss_kind
    from headless.models import CAPTURE_MAX_ROWS

    captured_as, rows = loss_kind("cwt").captured_as, CAPTURE_MAX_ROWS + 2048
    assert captured_as(CAPTURE_MAX_ROWS, 10**6, None) == "reference"
    assert captured_as(rows, rows, None) is None and captured_as(rows, 256_000, None) is None
    assert captured_as(rows, rows, 4096) == "bounded" and captured_as(rows, 8192, None) is None
    # Pythia-70M at 64 x 2048: captured only with a bound (measured faster at 20,480, not at room = V)
    assert captured_as(131_072, 50_304, None) is None and captured_as(131_072, 50_304, 20_480) == "bounded"
    assert captured_as(131_072 * 8, 50_304, 20_480) is None  # past the head's measured bound


def _one_lookup_case(arch, impl="reference"):
    """A static-shape CWT model (float64, no dropout) and a batch with pad tokens among the inputs
    AND among the scored targets (pad id 0), the case where the two lookups' gradients differ."""
    from headless.objectives import clm_labels, mlm_mask

    model, _, _ = _sync_free_case(arch, "cwt", "headless", impl, extra=["model.dropout=0"])
    ids = torch.randint(4, 100, (3, 32))  # 96 positions: no shape of V = 128 rows (100 padded)
    ids[2, 20:] = 0  # padding
    if arch in ENCODERS:
        ids, labels = mlm_mask(ids, mask_token_id=3, vocab_size=100, special_token_ids=[0, 1, 2], masking="static",
                               key=1)
        labels[0, (labels[0] != -100).nonzero()[0]] = 0  # a scored target that is the pad token
    else:
        ids[1, 7] = 0  # the target of position 6
        labels = clm_labels(ids)
    assert (labels == 0).any() and (ids == 0).any()
    return model, ids, labels


def _step(model, fn):
    model.zero_grad()
    out = fn()
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch,impl", [("bert", "reference"), ("bert", "bounded"), ("bert", "auto"),
                                       ("distilbert", "auto"), ("modernbert", "bounded"), ("gpt-neox", "reference"),
                                       ("gpt-neox", "bounded"), ("llama", "auto"), ("gpt2", "chunked")])
def test_one_lookup_gives_the_two_lookups_loss_and_every_gradient(arch, impl):
    """The CWT forward looks inputs and targets up in one embedding call: in float64 the loss,
    metrics and every parameter gradient of the two lookups (the backbone's from input_ids, the
    loss's weight[targets]), pad tokens among inputs and targets included."""
    model, ids, labels = _one_lookup_case(arch, impl)
    assert model.one_lookup
    new, g_new = _step(model, lambda: model(ids, labels))
    old, g_old = _step(model, lambda: model.loss(model.hidden_states(ids), labels))
    torch.testing.assert_close(new.loss, old.loss, rtol=0, atol=1e-10)
    assert int(new.num_targets) == int(old.num_targets) and float(new.accuracy) == float(old.accuracy)
    assert g_new.keys() == g_old.keys() and g_new
    for name in g_new:
        torch.testing.assert_close(g_new[name], g_old[name], rtol=0, atol=1e-10, msg=name)


def _vocab_sized_backward_ops(model, step):
    """Names of the backward's ops on a [V, D] tensor (zeroing, adding), from the profiler."""
    from collections import Counter

    vd = list(model.input_embedding_weight().shape)
    loss = step().loss
    model.zero_grad()
    with torch.profiler.profile(record_shapes=True) as prof:
        loss.backward()
    return Counter(e.name for e in prof.events() if e.name in ("aten::zero_", "aten::add_", "aten::add")
                   and e.input_shapes and list(e.input_shapes[0]) == vd)


@pytest.mark.parametrize("arch", ["bert", "gpt-neox"])
def test_one_lookup_builds_one_vocabulary_sized_gradient(arch):
    """The point of the single lookup: the backward zeroes ONE V×D gradient and adds none (two
    lookups zero two and add them)."""
    model, ids, labels = _one_lookup_case(arch, "bounded")
    assert _vocab_sized_backward_ops(model, lambda: model(ids, labels)) == {"aten::zero_": 1}
    two = _vocab_sized_backward_ops(model, lambda: model.loss(model.hidden_states(ids), labels))
    assert two["aten::zero_"] == 2 and two["aten::add_"] + two["aten::add"] == 1


def test_one_lookup_is_one_graph():
    model, ids, labels = _one_lookup_case("bert", "bounded")
    assert model.one_lookup and model.sync_free
    eager, g_eager = _step(model, lambda: model(ids, labels))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    got, g_got = _step(model, lambda: compiled(ids, labels))
    torch.testing.assert_close(got.loss, eager.loss, rtol=1e-10, atol=1e-10)
    for name in g_eager:
        torch.testing.assert_close(g_got[name], g_eager[name], rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("arch", ENCODERS + DECODERS)
def test_one_lookup_architectures_take_inputs_embeds_exactly(arch):
    """INPUTS_EMBEDS_EXACT lists exactly the table's architectures whose backbone gives the same
    hidden states for inputs_embeds as for input_ids, with pad tokens and an attention mask
    (RoBERTa's position ids count the pad tokens of input_ids)."""
    from headless.one_lookup import INPUTS_EMBEDS_EXACT

    model = build_model(_config(arch, "headless").model, _config(arch, "headless").objective, "cwt", 100, 0, 2)
    model = model.double().eval()
    ids = torch.randint(4, 100, (3, 32))
    ids[1, 20:] = 0
    mask = (ids != 0).long()
    backbone, emb = model.backbone, model.backbone.get_input_embeddings()
    same = all(torch.equal(backbone(input_ids=ids, attention_mask=m).last_hidden_state,
                           backbone(inputs_embeds=emb(ids), attention_mask=m).last_hidden_state) for m in (None, mask))
    assert same == (model.config.model_type in INPUTS_EMBEDS_EXACT)


def test_one_lookup_applies_only_to_plain_embeddings_and_local_cwt():
    """A subclass of nn.Embedding (a scaled embedding, say) keeps its own forward: the two lookups;
    so do the other losses, Bernoulli masking and a loss group."""

    class Scaled(torch.nn.Embedding):
        calls = 0

        def forward(self, ids):
            Scaled.calls += 1
            return super().forward(ids)

    model, ids, labels = _one_lookup_case("bert")
    old = model.backbone.get_input_embeddings()
    scaled = Scaled(*old.weight.shape, padding_idx=old.padding_idx, dtype=old.weight.dtype)
    scaled.weight = old.weight
    model.backbone.set_input_embeddings(scaled)
    assert not model.one_lookup
    new, _ = _step(model, lambda: model(ids, labels))
    assert Scaled.calls == 1
    model.backbone.set_input_embeddings(old)
    assert model.one_lookup
    old_out, _ = _step(model, lambda: model.loss(model.hidden_states(ids), labels))
    torch.testing.assert_close(new.loss, old_out.loss, rtol=0, atol=0)
    model.loss_group = object()
    assert not model.one_lookup
    model.loss_group = None
    for loss, extra in [("nce", []), ("ce+cwt", []), ("cwt", ["objective.masking=bernoulli"])]:
        cfg = load_config("tiny", flavour="vanilla" if loss.startswith("ce") else "headless",
                          overrides=SMALL + [f"objective.loss={loss}", *extra])
        assert not build_model(cfg.model, cfg.objective, loss, 100, 0, 2).one_lookup
