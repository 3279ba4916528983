"""Build the tiny demo model (a ~124k-parameter Qwen2 for the `arithmetic` task) into a folder.

    python scripts/make_tiny_model.py --out models/tiny-adder --seed 0

No hub access needed; ~5 s on 2 CPU cores. See grpo_kit/demo.py for the recipe.
"""

from __future__ import annotations

import argparse
import json

from grpo_kit.demo import MARKER, build_tiny_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write the model and tokenizer into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and warm start")
    parser.add_argument("--warm-start-steps", type=int, default=200,
                        help="format-only warm-start steps (0: the random initialisation)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.warm_start_steps < 0:
        parser.error("--warm-start-steps must be >= 0")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = build_tiny_model(args.out, seed=args.seed, warm_start_steps=args.warm_start_steps)
    recipe = json.loads((out / MARKER).read_text())
    print(f"wrote {out} ({recipe['parameters']:,} parameters, warm-start loss "
          f"{recipe['warm_start']['final_loss']}, {recipe['warm_start']['seconds']} s)")


if __name__ == "__main__":
    main()
