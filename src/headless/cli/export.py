"""`headless export`."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a run as a standard Hugging Face model directory",
                              description="Export a run's latest (or a given) checkpoint as an HF directory "
                              "(config, safetensors, tokenizer) loadable with AutoModel*.from_pretrained.")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--checkpoint", default=None, help="a checkpoint directory (default: the latest)")
    p.add_argument("--add-head", action="store_true",
                   help="headless decoders: attach a new LM head initialised from the input embeddings")
    p.add_argument("--license", default="other",
                   help="the model card's license id (e.g. apache-2.0); default other: the weights' terms "
                   "follow from the training data's")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from headless.export import export

    out = export(args.run_dir, args.out_dir, checkpoint=args.checkpoint, add_head=args.add_head,
                 overwrite=args.overwrite, license=args.license)
    print(f"exported to {out}")
    return 0
