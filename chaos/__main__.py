"""``python -m chaos [--seed N] [--minutes M]``: run one campaign, print its table, exit 1 if a check failed."""

from __future__ import annotations

import argparse
import random
import sys

from .campaign import DRAIN_LIMIT, Config, run
from .report import table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="the fault schedule's seed (default: a random one)")
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes of faults before healing (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--rate", type=float, default=30.0, help="events a second from the producers (default 30)")
    parser.add_argument("--drain-limit", type=float, default=DRAIN_LIMIT, help="seconds allowed to drain")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    outcome = run(Config(seed, args.minutes, args.workers, rate=args.rate, drain_limit=args.drain_limit))
    print(table(outcome))
    return 0 if outcome.verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
