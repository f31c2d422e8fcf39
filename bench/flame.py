"""Summarise a py-spy profile (`--format raw`, collapsed stacks): where the time goes.

    python -m bench.flame bench/results/runs/<run>/<label>.py-spy.txt [--top 40] [--under NAME]

Prints the functions with the most samples on the stack (inclusive) and at its top
(self), as shares of all samples; `--under NAME` keeps only stacks through NAME.
"""

import argparse
from collections import Counter
from pathlib import Path


def _frames(stack: str) -> list[str]:
    # "process;thread;frame (file:line);..." -> "frame (file)" without line numbers.
    names = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        file = where.split(":")[0].rstrip(")")
        short = "/".join(file.split("/")[-2:])
        names.append(f"{name} ({short})" if file else name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--under", default=None)
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = _frames(stack)
        if args.under and not any(args.under in frame for frame in frames):
            continue
        count = int(count_text)
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title}:")
        for name, count in counter.most_common(args.top):
            print(f"{100 * count / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
