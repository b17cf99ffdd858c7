#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes fuzz_conn seeds (tests/fuzz/corpus/conn/) from the HTTP corpus (tests/corpus/http/).

Each case becomes inputs in fuzz_conn's layout: options, seed, c2u length (LE u16), c2u bytes,
u2c bytes. Options pick the limits preset and whether the engine's skips are taken.
"""
import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus", "http")
OUT = os.path.join(HERE, "corpus", "conn")

# (name suffix, options byte, seed): preset 2 is the defaults; 0 small limits with skips.
VARIANTS = [("d", 0x02, 1), ("s", 0x08, 7)]


def main():
    os.makedirs(OUT, exist_ok=True)
    for case in sorted(glob.glob(os.path.join(CORPUS, "*.case"))):
        name = os.path.basename(case)[:-5]
        with open(os.path.join(CORPUS, name + ".c2u"), "rb") as f:
            c2u = f.read()
        with open(os.path.join(CORPUS, name + ".u2c"), "rb") as f:
            u2c = f.read()
        if len(c2u) > 0xffff:
            continue
        for suffix, opts, seed in VARIANTS:
            data = bytes([opts, seed, len(c2u) & 0xff, len(c2u) >> 8]) + c2u + u2c
            with open(os.path.join(OUT, "seed-%s-%s" % (name, suffix)), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
