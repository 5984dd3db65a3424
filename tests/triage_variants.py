"""Variants of the triage corpus that no rule was written for: other hostnames, ports and dates (moved together, so
their order and meaning are kept), re-wrapped lines, changed casing, one typo in a word, noise lines around the
report. Used by tests/diagnostics/test_triage_families.py and bench/triage_accuracy.py."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "data" / "triage_corpus.jsonl"


def load() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


HOSTS = ["portal.bigcorp.example", "www.kunde-shop.de", "api.tienda.es", "app.boutique.fr", "loja.exemplo.com.br",
         "mise.example.jp", "x1.y2.example.org"]


def _typo(text: str, rng: random.Random) -> str:
    """One typo in one long lower-case word (never inside a code, a number or a quoted name)."""
    words = [m for m in re.finditer(r"(?<![\w.'\"-])[a-z]{7,}(?![\w.'\"-])", text)]
    if not words:
        return text
    m = rng.choice(words)
    w = m.group(0)
    i = rng.randrange(1, len(w) - 2)
    kind = rng.choice(["drop", "swap", "double"])
    if kind == "drop":
        w2 = w[:i] + w[i + 1:]
    elif kind == "swap":
        w2 = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    else:
        w2 = w[:i] + w[i] + w[i:]
    return text[:m.start()] + w2 + text[m.end():]


def _wrap(text: str, rng: random.Random) -> str:
    width = rng.randrange(48, 90)
    out, line = [], ""
    for word in text.split(" "):
        if len(line) + len(word) + 1 > width and line:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "\n".join(out)


def variant(text: str, rng: random.Random) -> tuple[str, str]:
    """A mutation of ``text`` and what was done to it."""
    done = []
    host = rng.choice(HOSTS)
    t = re.sub(r"\b(?:[a-z0-9-]{1,30}\.){1,3}(?:example|test|partner|customer)\.(?:com|test|net|org|io)\b|"
               r"\b[a-z0-9-]{1,30}\.(?:test)\b", host, text)
    if t != text:
        done.append("host")
    t2 = re.sub(r"(?<=:)\d{4,5}\b", lambda m: str(rng.randrange(1025, 65000)), t)
    back = rng.randrange(1, 6)  # every date moves back by the same number of years: their order is kept
    if re.search(r"current time|not ?after|not ?before", t, re.I):
        back = 0  # dates compared with today: moving them would change what the report means
    t2 = t if not back else re.sub(r"\b20(\d\d)(?=-\d\d-\d\d)", lambda m: f"20{int(m.group(1)) - back:02d}", t2)
    if t2 != t:
        done.append("ports/dates")
    t = t2
    ops = rng.sample(["wrap", "case", "typo", "noise"], k=2)
    for op in ops:
        if op == "wrap" and "\n" not in t and len(t) > 60:
            t = _wrap(t, rng)
            done.append("wrap")
        elif op == "case":
            t = t.lower() if rng.random() < 0.5 else t.upper()
            done.append("case")
        elif op == "typo":
            t2 = _typo(t, rng)
            if t2 != t:
                t = t2
                done.append("typo")
        elif op == "noise":
            t = (f"[{rng.randrange(10, 23)}:{rng.randrange(10, 59)}:{rng.randrange(10, 59)}] user@laptop ~ $ ./deploy.sh\n"
                 + t + "\n\nany idea? this started after the weekend >:(")
            done.append("noise")
    return t, "+".join(done) or "none"


