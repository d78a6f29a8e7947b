"""Why does a headless encoder stall on the MLM plateau?  Short pretraining runs with diagnostics.

Each run builds the study's twin through the library (`load_config` -> `load_data` -> `build_model`
-> `build_run` -> `train_step`), optionally swaps the CWT scoring for a variant, trains for at most
`--steps` steps or `--deadline` wall seconds, and writes one JSON line per `--log-every` steps:
training loss and top-1 accuracy (CWT: in-batch retrieval; vanilla: over the vocabulary), and on
`--diag-every` steps the geometry the candidate causes are about, measured on one fixed batch:

- `o_norm`: mean norm of the outputs at the scored positions (post-LayerNorm: about sqrt(D)·γ);
- `e_norm`: mean norm of the target embeddings (token-weighted: the batch's targets);
- `e_common`: ||mean target embedding|| / mean ||target embedding||, the share of one common
  direction in the targets (1: every target the same vector);
- `o_cos`: mean pairwise cosine of the outputs (1: the model says the same thing everywhere);
- `in_cos`: mean pairwise cosine of the *inputs* after the embedding LayerNorm, at unmasked positions
  (how distinguishable the tokens are to the first layer);
- `pos_logit`, `logit_std`: the positive's score and the spread of all scores (the logit scale).

Variants (`--variant`), all headless unless `vanilla`:
  paper    the paper's objective through the library (`cwt_loss`)
  scale    logits · exp(s), a learned scalar s (init 0: the paper's objective at step 0)
  bias     logits + b[target of the column], a learned per-token bias (init 0): the unigram prior
           gets a home other than the embeddings' common direction
  both     scale and bias
  cosine   cos(o, e) · exp(s), s learned, init log(`--cos-scale`)
  proj     the library's `objective.projector=transform`: the outputs pass Linear D×D, GELU,
           LayerNorm first (the transform the vanilla twin's MLM head has), dropped at export
  zloss    the paper's scores plus 1e-4 · logsumexp² per row (PaLM's z-loss: keeps the scores' scale)
  emblr    the paper's objective, the embedding matrix at a tenth of the learning rate

Usage (one H200, several runs side by side; scripts/plateau_probe.sh runs the set):
  python scripts/plateau_probe.py --data DIR --variant paper --out OUT/paper.jsonl optim.lr=1e-3
"""

from __future__ import annotations

import argparse
import json
import math
import time
import types

import torch
import torch.nn.functional as F


def variant_loss(variant: str, cos_scale: float):
    """A replacement for `LanguageModel.loss` at static MLM: the K×K in-batch scores of the paper,
    changed as `variant` says; duplicates stay negatives, as in the paper."""
    from headless.losses import LossOutput
    from headless.objectives import IGNORE_INDEX, gather_static_positions, static_mask_count

    def loss(self, hidden, labels):
        o, t = gather_static_positions(hidden, labels, static_mask_count(labels.shape[1], self.objective.mask_prob))
        valid = t != IGNORE_INDEX
        ids = t.clamp(min=0)
        e = self.input_embedding_weight().index_select(0, ids)
        if variant == "cosine":
            scores = F.normalize(o.float(), dim=-1) @ F.normalize(e.float(), dim=-1).T
        else:
            scores = (o @ e.T).float()
        if variant in ("scale", "both", "cosine"):
            scores = scores * self.probe_log_scale.exp()
        if variant in ("bias", "both"):
            scores = scores + self.probe_bias.index_select(0, ids)[None, :]
        scores = scores.masked_fill(~valid[None, :], float("-inf"))
        target = torch.arange(len(t), device=t.device)
        rows = F.cross_entropy(scores, target, reduction="none")
        if variant == "zloss":
            rows = rows + 1e-4 * torch.logsumexp(scores, dim=1).square()
        rows = torch.where(valid, rows, torch.zeros_like(rows))
        hit = (ids.index_select(0, scores.argmax(dim=1)) == ids) & valid
        n = valid.sum()
        return LossOutput(loss=rows.sum(), num_targets=n, accuracy=(hit.sum().float() / n.clamp(min=1)).detach(),
                          num_unique=None)

    return loss


@torch.no_grad()
def diagnostics(model, input_ids, labels) -> dict:
    from headless.objectives import IGNORE_INDEX, gather_static_positions, static_mask_count

    was = model.training
    model.eval()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=input_ids.is_cuda):
        hidden = model.hidden_states(input_ids)
    o, t = gather_static_positions(hidden.float(), labels, static_mask_count(labels.shape[1], model.objective.mask_prob))
    o = model.project(o)
    keep = t != IGNORE_INDEX
    o, t = o[keep], t[keep]
    weight = model.input_embedding_weight().float()
    e = weight.index_select(0, t)
    on = F.normalize(o, dim=-1)
    scores = o @ e.T
    n = len(t)
    offdiag = (n * n - n) or 1
    emb = model.backbone.get_input_embeddings()
    # the first layer's view of the input tokens: word embedding (+ positions) through the embedding LN
    ids = input_ids[:, :32].reshape(-1)
    embeddings = model.backbone.embeddings if hasattr(model.backbone, "embeddings") else None
    if embeddings is not None and hasattr(embeddings, "LayerNorm"):
        x = F.normalize(embeddings.LayerNorm(emb(ids).float()).float(), dim=-1)
    else:
        x = F.normalize(emb(ids).float(), dim=-1)
    m = len(ids)
    if was:
        model.train()
    return {
        "o_norm": o.norm(dim=-1).mean().item(),
        "e_norm": e.norm(dim=-1).mean().item(),
        "e_common": (e.mean(0).norm() / e.norm(dim=-1).mean()).item(),
        "o_cos": ((on @ on.T).sum().item() - n) / offdiag,
        "in_cos": ((x @ x.T).sum().item() - m) / ((m * m - m) or 1),
        "pos_logit": scores.diagonal().mean().item(),
        "logit_std": scores.std().item(),
        "emb_rows_norm": weight.norm(dim=-1).mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="multilingual")
    parser.add_argument("--variant", default="paper", choices=["vanilla", "paper", "scale", "bias", "both", "cosine",
                                                                   "proj", "zloss", "emblr"])
    parser.add_argument("--cos-scale", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--deadline", type=float, default=1e9, help="wall seconds from start")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--diag-every", type=int, default=500)
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    t0 = time.time()

    from headless.config import load_config
    from headless.train import distributed as dist
    from headless.train.build import build_model, build_run, load_data
    from headless.train.step import micro_batches, train_step

    flavour = "vanilla" if args.variant == "vanilla" else "headless"
    overrides = [f"data.path={args.data}", f"max_steps={args.steps}", "eval_every=100000000", *args.overrides]
    if args.variant == "proj":
        overrides.append("objective.projector=transform")
    config = load_config(args.preset, overrides=overrides, flavour=flavour)
    env = dist.init_distributed(config.device)
    torch.manual_seed(config.seed)
    config, data = load_data(config, env)
    model = build_model(config, data)
    if args.variant == "emblr":  # the embedding matrix in a group of its own at lr / 10
        import headless.train.build as build

        def optimizer_with_slow_embeddings(model, config, device, _build=build.build_optimizer):
            opt = _build(model, config, device)
            emb = model.input_embedding_weight()
            for group in opt.param_groups:
                group["params"] = [p for p in group["params"] if p is not emb]
            opt.add_param_group({"params": [emb], "weight_decay": config.optim.weight_decay,
                                 "lr": config.optim.lr / 10})
            return opt

        build.build_optimizer = optimizer_with_slow_embeddings
    elif args.variant not in ("vanilla", "paper", "proj"):
        d = model.input_embedding_weight()
        if args.variant in ("scale", "both", "cosine"):
            init = math.log(args.cos_scale) if args.variant == "cosine" else 0.0
            model.probe_log_scale = torch.nn.Parameter(torch.tensor(init))
        if args.variant in ("bias", "both"):
            model.probe_bias = torch.nn.Parameter(torch.zeros(d.shape[0]))
    if args.variant not in ("vanilla", "paper", "emblr", "proj"):
        model.loss = types.MethodType(variant_loss(args.variant, args.cos_scale), model)
    from headless.train.optim import Schedule

    run = build_run(config, env, data, model, Schedule.of(config.optim, config.optim.schedule_steps or config.max_steps))
    info = data.info
    probe = micro_batches(run.loader, config, info, step=10**6)[0]
    probe_ids, probe_labels = probe[0].to(run.device), probe[1].to(run.device)
    out = open(args.out, "w")
    header = {"variant": args.variant, "config": config.to_dict(), "params": run.params, "setup_s": time.time() - t0,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    out.write(json.dumps(header) + "\n")
    out.flush()
    loss_acc = torch.zeros(2, device=run.device)
    count = 0
    t_train = time.time()
    for step in range(config.max_steps):
        micro = micro_batches(run.loader, config, info, step=step)
        result = train_step(run.wrapped, run.optimizer, micro, device=run.device, autocast_dtype=run.autocast_dtype,
                            grad_clip=config.optim.grad_clip, scheduler=run.scheduler, trainable=run.trainable,
                            graphs=run.graphs)
        r = result.result
        n = float(r.num_targets) if not torch.is_tensor(r.num_targets) else r.num_targets.float()
        loss_acc += torch.stack([r.loss_sum / n, r.correct / n])
        count += 1
        last = step + 1 == config.max_steps or time.time() - t0 > args.deadline
        if (step + 1) % args.log_every == 0 or last:
            values = (loss_acc / count).tolist()
            row = {"step": step + 1, "loss": values[0], "acc": values[1], "lr": run.scheduler.get_last_lr()[0],
                   "wall": time.time() - t_train, "grad_norm": float(result.grad_norm)}
            if (step + 1) % args.diag_every == 0 or last:
                row.update(diagnostics(model, probe_ids, probe_labels))
                if hasattr(model, "probe_log_scale"):
                    row["scale"] = model.probe_log_scale.exp().item()
                if hasattr(model, "probe_bias"):
                    row["bias_std"] = model.probe_bias.std().item()
            out.write(json.dumps(row) + "\n")
            out.flush()
            loss_acc.zero_()
            count = 0
        if last:
            break
    out.close()


if __name__ == "__main__":
    main()
