"""``mracq train dlnet``: train the COSY DLNet on simulated maps, write weights + model card."""

from __future__ import annotations

HELP = "train the COSY DLNet (DLMC) on simulated NV-13C maps; writes weights and a model card"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="dlnet.pt", help="weights file (default dlnet.pt)")
    parser.add_argument(
        "--card", default=None, help="model card (default: OUT stem + _model_card.md)"
    )
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (resumed if present)")
    parser.add_argument("--minutes", type=float, default=28.0, help="time budget (default 28)")
    parser.add_argument("--max-steps", type=int, default=4000, help="step limit (default 4000)")
    parser.add_argument("--maps", type=int, default=10000, help="simulated training maps")
    parser.add_argument("--width", type=int, default=8, help="first-level channels (seed: 32)")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import os
    import shlex
    from pathlib import Path

    from mracq.cli import CLIError
    from mracq.recon.cosy.dlnet import save_weights
    from mracq.recon.cosy.training import TrainConfig, train, write_model_card

    if args.minutes <= 0 or args.maps < 1 or args.width < 1:
        raise CLIError("--minutes, --maps and --width must be positive")
    cfg = TrainConfig(
        n_maps=args.maps,
        width=args.width,
        depth=args.depth,
        batch=args.batch,
        lr=args.lr,
        minutes=args.minutes,
        max_steps=args.max_steps,
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
    save_weights(res.net, out, extra={"steps": res.steps, "seconds": res.seconds})
    write_model_card(
        card,
        cfg,
        res,
        weights=out.name,
        size_kb=out.stat().st_size / 1024,
        command=(
            f"mracq train dlnet --out {shlex.quote(str(out))} --minutes {args.minutes:g} "
            f"--max-steps {args.max_steps} --maps {args.maps} --width {args.width} "
            f"--depth {args.depth} --batch {args.batch} --lr {args.lr:g} --seed {args.seed} "
            f"--threads {args.threads}"
        ),
        load_before=load_before,
        load_after="{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    )
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB) and {card}")
    print(f"{res.steps} steps in {res.seconds / 60:.1f} min; validation: "
          + ", ".join(f"{k}={v:.4f}" for k, v in res.val.items() if k != "history"))
    return 0
