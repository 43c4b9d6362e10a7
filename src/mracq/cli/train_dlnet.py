"""``mracq train dlnet``: train the COSY DLNet on simulated maps, write weights + model card."""

from __future__ import annotations

HELP = "train the COSY DLNet (DLMC) on simulated NV-13C maps; writes weights and a model card"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="dlnet.pt", help="weights file (default dlnet.pt)")
    parser.add_argument(
        "--card", default=None, help="model card (default: OUT stem + _model_card.md)"
    )
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (resumed if present)")
    parser.add_argument("--steps", type=int, default=3000,
                        help="training steps (default 3000); the run is fixed by steps and seed")
    parser.add_argument("--minutes", type=float, default=None,
                        help="optional wall-time cap (makes the result depend on the load)")
    parser.add_argument("--per-family", type=int, default=1000,
                        help="simulated maps per family (default 1000, six families)")
    parser.add_argument("--width", type=int, default=8, help="first-level channels (seed: 32)")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import json
    import os
    import shlex
    from pathlib import Path

    from mracq.cli import CLIError
    from mracq.recon.cosy.dlnet import save_weights
    from mracq.recon.cosy.training import TrainConfig, train, write_model_card

    if (args.minutes is not None and args.minutes <= 0) or args.per_family < 1 \
            or args.width < 1 or args.steps < 1:
        raise CLIError("--steps, --minutes, --per-family and --width must be positive")
    cfg = TrainConfig(
        per_family=args.per_family,
        width=args.width,
        depth=args.depth,
        batch=args.batch,
        lr=args.lr,
        steps=args.steps,
        minutes=args.minutes,
        seed=args.seed,
        threads=args.threads,
    )
    out = Path(args.out)
    card = Path(args.card) if args.card else out.with_name(out.stem + "_model_card.md")
    load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    try:
        res = train(cfg, checkpoint=args.checkpoint, progress=not args.no_progress)
    except KeyboardInterrupt:
        from mracq.cli import Interrupted

        if args.checkpoint:
            raise Interrupted(f"training stopped; {args.checkpoint} keeps the last checkpoint "
                              f"(every {cfg.checkpoint_every} steps): run the same command "
                              "again to continue from it") from None
        raise Interrupted("training stopped; nothing was kept (no --checkpoint). Pass "
                          "--checkpoint FILE to be able to continue") from None
    save_weights(res.net, out, extra={"steps": res.steps, "seconds": res.seconds,
                                      "seed": args.seed})
    command = (
        f"mracq train dlnet --out {shlex.quote(str(out))} --steps {args.steps} "
        f"--per-family {args.per_family} --width {args.width} --depth {args.depth} "
        f"--batch {args.batch} --lr {args.lr:g} --seed {args.seed} --threads {args.threads}"
        + (f" --minutes {args.minutes:g}" if args.minutes is not None else "")
    )
    load_after = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    write_model_card(card, cfg, res, weights=out.name, size_kb=out.stat().st_size / 1024,
                     command=command, load_before=load_before, load_after=load_after)
    summary = out.with_name(out.stem + "_train.json")
    summary.write_text(json.dumps({
        "command": command, "steps": res.steps, "seconds": res.seconds,
        "data_seconds": res.data_seconds, "load_before": load_before,
        "load_after": load_after, "val": res.val, "seed": args.seed}, indent=1))
    mean = res.val["mean"]
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB), {card} and {summary}")
    print(f"{res.steps} steps in {res.seconds / 60:.1f} min (+{res.data_seconds / 60:.1f} min "
          f"data); validation mean over families: 10% {mean['rmse_10pct']:.4f}, "
          f"40% {mean['rmse_40pct']:.4f}")
    return 0
