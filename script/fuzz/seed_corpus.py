#!/usr/bin/env python3
"""Seeds fuzz/corpus/{compile,vm_diff}/.

compile: every tests/data/seeds/*.cfg (the parsed ones and the excluded ones, which must fail),
and every string literal in script/tests/*.rs that looks like script text (contains `route`,
`{`, `(`, `=` or `if`), decoded from Rust escapes. Each is written as is (host answers 1 /
alternating) and again with a 0x00 separator and host-result bytes (see
fuzz_targets/compile.rs).
vm_diff: the first 64 generator seeds of tests/differential.rs (seed * 0x2545F4914F6CDD1D,
8 bytes little-endian), each alone and with a few host-result bytes.

Run from anywhere: python3 script/fuzz/seed_corpus.py. Idempotent (file names are content
hashes); the corpus directories are git-ignored.
"""

import hashlib
import pathlib
import re

FUZZ = pathlib.Path(__file__).resolve().parent
SCRIPT = FUZZ.parent
ROOT = SCRIPT.parent
HOST_BYTES = [bytes([0x44, 0x15, 0x07, 0x80, 0x21]), bytes([0x00]), bytes(range(1, 33))]


def put(target, data):
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


STRING = re.compile(r'r(#*)"(.*?)"\1|"((?:[^"\\]|\\.)*)"', re.DOTALL)
ESC = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def unescape(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c != "\\" or i + 1 >= len(s):
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        if n == "\n":  # line continuation: skip the newline and leading whitespace
            i += 2
            while i < len(s) and s[i] in " \t\n":
                i += 1
        elif n == "u":
            m = re.match(r"\\u\{([0-9a-fA-F]+)\}", s[i:])
            out.append(chr(int(m.group(1), 16)) if m else "u")
            i += m.end() if m else 2
        else:
            out.append(ESC.get(n, n))
            i += 2
    return "".join(out)


def snippets():
    found = set()
    for f in sorted((SCRIPT / "tests").rglob("*.rs")):
        text = f.read_text()
        for m in STRING.finditer(text):
            s = m.group(2) if m.group(2) is not None else unescape(m.group(3))
            if len(s) >= 4 and any(k in s for k in ("route", "{", "(", "=", "if")):
                found.add(s.encode())
    return found


def main():
    scripts = [f.read_bytes() for f in sorted((ROOT / "tests/data/seeds").rglob("*.cfg"))]
    scripts += sorted(snippets())
    for s in scripts:
        put("compile", s)
        for h in HOST_BYTES:
            put("compile", s + b"\0" + h)
    n = 0
    for seed in range(1, 65):
        s = ((seed * 0x2545F4914F6CDD1D) & (2**64 - 1)).to_bytes(8, "little")
        put("vm_diff", s)
        put("vm_diff", s + HOST_BYTES[seed % len(HOST_BYTES)])
        n += 2
    print(f"compile: {len(scripts)} scripts ({len(scripts) * (1 + len(HOST_BYTES))} seeds), vm_diff: {n} seeds")


if __name__ == "__main__":
    main()
