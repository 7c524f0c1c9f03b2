"""``python -m world_engine.train <stage> [--flags]``: run one training stage."""

from __future__ import annotations

import importlib
import sys

import torch

STAGES = {"data": "data", "ae": "ae", "df": "df", "export": "export", "eval": "evaluate", "fps": "fps"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        print(f"usage: python -m world_engine.train {{{','.join(STAGES)}}} [--help]", file=sys.stderr)
        raise SystemExit(2)
    if not torch.cuda.is_available():
        torch.set_num_threads(2)  # the target machine has 2 cores; more threads only add contention
    module = importlib.import_module(f"world_engine.train.{STAGES[sys.argv[1]]}")
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()
