"""``python -m training <stage> [--flags]``: run one training stage."""

from __future__ import annotations

import importlib
import os
import sys

import torch

STAGES = {"data": "data", "ae": "ae", "encode": "data:encode_main", "df": "df", "probe": "probe", "distill": "distill",
          "export": "export", "eval": "evaluate", "compare": "compare", "fps": "fps"}  # stage -> module[:function]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        print(f"usage: python -m training {{{','.join(STAGES)}}} [--help]", file=sys.stderr)
        raise SystemExit(2)
    if not torch.cuda.is_available():  # the target machine has 2 cores; more threads only add contention
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    module_name, _, function = STAGES[sys.argv[1]].partition(":")
    module = importlib.import_module(f"training.{module_name}")
    getattr(module, function or "main")(sys.argv[2:])


if __name__ == "__main__":
    main()
