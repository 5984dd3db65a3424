"""Reading a pasted report before the rules see it: one flat line of text, typos of known words and codes put right,
and the outer words of wrapping tools (kubectl, docker, helm, terraform, pip, npm, git, cloud CLIs) set aside so the
innermost TLS error decides.

Everything is bounded: the report is at most 64 KiB, at most ``MAX_TOKENS`` distinct words are looked at, typo
lookups use precomputed deletion neighbourhoods (SymSpell: no pairwise edit distances over the whole vocabulary),
and every regular expression here has bounded repeats only.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Iterable

__all__ = ["flatten", "Corrector", "strip_wrappers", "bounded_distance"]

MAX_TOKENS = 3000
MAX_CODE_LOOKUPS = 200  # distinct unknown code-like tokens looked up per report
MAX_WORD_LOOKUPS = 1500  # distinct unknown words looked up per report

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u00b4": "'", "`": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
                         "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " ", "\u200b": "",
                         "\u3000": " "})


def flatten(text: str) -> str:
    """NFKC (full-width letters and digits become ASCII), accents dropped from Latin letters, typographic quotes
    and dashes made plain, every run of whitespace one space (so wrapped lines read as one sentence)."""
    t = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    # drop combining accents from Latin letters only (keeps Japanese kana with their dakuten intact)
    decomposed = unicodedata.normalize("NFD", t)
    out = []
    prev_latin = False
    for ch in decomposed:
        if unicodedata.combining(ch) and prev_latin:
            continue
        out.append(ch)
        prev_latin = ch.isascii() and ch.isalpha()
    t = unicodedata.normalize("NFC", "".join(out))
    return re.sub(r"\s{1,4096}", " ", t)


def bounded_distance(a: str, b: str, bound: int) -> int:
    """Optimal-string-alignment distance (adjacent transpositions count 1), or ``bound + 1`` once it exceeds
    ``bound``: at most ``len(a) * (2 * bound + 1)`` cells are computed."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    inf = bound + 1
    prev2: list[int] | None = None
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [inf] * (len(b) + 1)
        cur[0] = i
        lo, hi = max(1, i - bound), min(len(b), i + bound)
        row_min = cur[0] if lo == 1 else inf
        for j in range(lo, hi + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            v = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                v = min(v, prev2[j - 2] + 1)
            cur[j] = min(v, inf)
            row_min = min(row_min, cur[j])
        if row_min > bound:
            return inf
        prev2, prev = prev, cur
    return min(prev[len(b)], inf)


def _inflection(token: str, fix: str) -> bool:
    """``expires`` / ``expired``: the same stem with another ending is a different word, not a typo."""
    if len(token) != len(fix):
        return False
    n = len(token)
    return token[: n - 2] == fix[: n - 2] and token[n - 2:] != fix[n - 2:] and token[-1] != fix[-1]


def _deletes(word: str, depth: int) -> set[str]:
    out = {word}
    frontier = {word}
    for _ in range(depth):
        nxt = set()
        for w in frontier:
            for i in range(len(w)):
                nxt.add(w[:i] + w[i + 1:])
        out |= nxt
        frontier = nxt
    return out


class Corrector:
    """Puts right small typos of known words (``certifcate`` -> ``certificate``) and known codes
    (``ERR_CERT_COMON_NAME_INVALID`` -> ``ERR_CERT_COMMON_NAME_INVALID``).

    Words: lower-case, 5+ letters, one edit (two from 9 letters); a word that is itself known, or whose only
    difference is its ending (``expires`` is not a typo of ``expired``), is left alone. Codes: upper-case tokens
    with ``_``, matched case-insensitively, one edit (two from 12 characters).
    """

    def __init__(self, words: Iterable[str], codes: Iterable[str], keep: Iterable[str] = ()) -> None:
        self.words = {w.lower() for w in words if len(w) >= 5}
        self.keep = {w.lower() for w in keep} | self.words
        self.codes = {c.upper() for c in codes if len(c) >= 8}
        self.max_code = max((len(c) for c in self.codes), default=0) + 2
        self.max_word = max((len(w) for w in self.words), default=0) + 2
        # deletion -> the known strings it comes from, "\0"-joined (cheaper to build than a set per key)
        self._word_index: dict[str, str] = {}
        self._code_index: dict[str, str] = {}
        for known, index, long_at in ((self.words, self._word_index, 9), (self.codes, self._code_index, 12)):
            get = index.get
            for w in sorted(known):
                for d in _deletes(w, 2 if len(w) >= long_at else 1):
                    prev = get(d)
                    index[d] = w if prev is None else prev + "\0" + w

    def _lookup(self, token: str, index: dict[str, str], bound: int, words: bool) -> str | None:
        found: set[str] = set()
        for d in _deletes(token, bound):
            hit = index.get(d)
            if hit is not None:
                found.update(hit.split("\0"))
        ranked = []
        for cand in found:
            dist = bounded_distance(token, cand, bound if len(cand) >= (9 if words else 12) else 1)
            if dist <= bound:
                ranked.append((dist, cand[-1:] != token[-1:], cand[:1] != token[:1], cand))
        for _d, _l, _f, cand in sorted(ranked):
            if words and _inflection(token, cand):
                continue
            return cand
        return None

    @lru_cache(maxsize=8192)
    def word(self, token: str) -> str | None:
        t = token.lower()
        if len(t) < 5 or len(t) > self.max_word or t in self.keep or not t.isalpha():
            return None
        fix = self._lookup(t, self._word_index, 2 if len(t) >= 9 else 1, True)
        return fix if fix != t else None

    @lru_cache(maxsize=8192)
    def code(self, token: str) -> str | None:
        t = token.upper()
        if t in self.codes or len(t) < 8 or len(t) > 64:
            return None
        if len(t) <= self.max_code:
            fix = self._lookup(t, self._code_index, 2 if len(t) >= 12 else 1, False)
            if fix:
                return fix
        # a known code behind an unknown prefix (ERR_SSL_ + UNRECOGNISED_NAME_ALERT): the three longest tails that
        # could be a code
        starts = [i + 1 for i, ch in enumerate(t) if ch == "_" and 12 <= len(t) - i - 1 <= self.max_code][:3]
        for i in starts:
            tail = t[i:]
            if tail not in self.codes:
                fix = self._lookup(tail, self._code_index, 2, False)
                if fix:
                    return t[:i] + fix
        return None

    def correct(self, flat: str) -> tuple[str, list[tuple[str, str]]]:
        """``flat`` with known typos put right, and the (typo, fix) pairs."""
        fixes: dict[str, str] = {}
        seen = codes_looked = words_looked = 0
        for m in re.finditer(r"[A-Za-z][A-Za-z0-9]{0,63}(?:_{1,2}[A-Za-z0-9]{1,63}){1,12}|[A-Za-z]{5,40}", flat):
            tok = m.group(0)
            if tok in fixes:
                continue
            seen += 1
            if seen > MAX_TOKENS:
                break
            if "_" in tok:
                if tok.upper() in self.codes or codes_looked >= MAX_CODE_LOOKUPS:
                    continue
                codes_looked += 1
                fix = self.code(tok)
                if fix:
                    fixes[tok] = fix
            elif tok.isalpha():
                if tok.lower() in self.keep or words_looked >= MAX_WORD_LOOKUPS:
                    continue
                words_looked += 1
                fix = self.word(tok)
                if fix:
                    fixes[tok] = fix
        if not fixes:
            return flat, []
        pattern = re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(re.escape(k) for k in sorted(fixes, key=len, reverse=True))
                             + r")(?![A-Za-z0-9_])")
        out = pattern.sub(lambda m: fixes[m.group(0)], flat)
        return out, sorted(fixes.items())


#: Outer words of tools that wrap a TLS error in their own sentence. They never decide: the text after them does.
WRAPPERS = re.compile(
    r"Unable to connect to the server: ?"  # kubectl
    r"|Error from server(?: \([A-Za-z]{1,40}\))?: ?"
    r"|Error: Kubernetes cluster unreachable: ?"  # helm
    r"|Error: (?:INSTALLATION|UPGRADE) FAILED: ?"
    r"|looks like \"[^\"]{1,300}\" is not a valid chart repository or cannot be reached: ?"
    r"|Error response from daemon: ?"  # docker
    r"|error pulling image(?: configuration)?: ?|failed to (?:do request|resolve reference|copy|pull)[^:]{0,200}: ?"
    r"|Error: (?:Failed to (?:query available provider packages|install provider)|error configuring [^:]{1,100})"
    r"[^:]{0,200}: ?"  # terraform
    r"|(?:could not|failed to) (?:connect to|request discovery document|retrieve)[^:\"]{0,150}: ?"
    r"|WARNING: Retrying \([^)]{0,200}\)\)? after connection broken by ?"  # pip
    r"|Could not fetch URL [^:]{0,30}:[^:]{0,300}: ?|There was a problem confirming the ssl certificate: ?"
    r"|Max retries exceeded with url: [^(]{0,300}\((?:Caused by [A-Za-z]{1,40}\()?"
    r"|HTTPSConnectionPool\([^)]{0,300}\): ?"
    r"|npm (?:ERR!|error) (?:request to \S{1,300} failed, reason: ?|network )"  # npm
    r"|fatal: unable to access '[^']{1,300}': ?"  # git
    r"|Unable to connect to (?:ssl|tls)://\S{1,300} \((?:Unknown error|Success)\)"  # PHP, after a TLS failure
    r"|SSL validation failed for \S{1,300} ?"  # aws
    r"|Get \"https?://[^\"]{1,300}\": ?|Post \"https?://[^\"]{1,300}\": ?",  # Go wrappers
    re.I)


def strip_wrappers(flat: str) -> str:
    """``flat`` with the wrapping tools' outer words blanked out (same length, so offsets keep their meaning)."""
    return WRAPPERS.sub(lambda m: " " * len(m.group(0)), flat)
