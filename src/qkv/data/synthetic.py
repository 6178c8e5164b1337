"""Generated tasks, deterministic from a seed: dates, copy / reverse / sort, and ListOps.

**Dates** (the built-in translation data): human-readable dates in English, French, German and
Spanish, in many formats, translated to ISO 8601::

    "3 mars 2019", "March 3rd, 2019", "Sunday 03.03.19", "domingo, 3 de marzo de 2019"  ->  "2019-03-03"

Weekday names are those of the date. Every numeric format is day-first or year-first (never the US
month-first order), so a source string has exactly one target. Two-digit years are used only when
the year range spans at most 100 years, where they are unambiguous.

**Sequences**: strings of symbols from an alphabet, one character per symbol, mapped to a copy, the
reverse, or the sorted string. **ListOps** lives in :mod:`qkv.data.listops` and is re-exported here.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence

from qkv.data.listops import OPERATORS, evaluate_listops, generate_listops, listops_splits, listops_tokenizer
from qkv.data.tokenizers import CharTokenizer

__all__ = [
    "DATE_LANGUAGES",
    "DATE_FORMATS",
    "MONTHS",
    "WEEKDAYS",
    "format_date",
    "date_pairs",
    "date_splits",
    "date_tokenizer",
    "copy_pairs",
    "reverse_pairs",
    "sort_pairs",
    "SEQUENCE_TASKS",
    "sequence_splits",
    "OPERATORS",
    "evaluate_listops",
    "generate_listops",
    "listops_splits",
    "listops_tokenizer",
]

DATE_LANGUAGES = ("en", "fr", "de", "es")

# (full names, abbreviations), January first.
MONTHS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
         "November", "December"),
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    ),
    "fr": (
        ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
         "novembre", "décembre"),
        ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc."),
    ),
    "de": (
        ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
         "November", "Dezember"),
        ("Jan.", "Feb.", "März", "Apr.", "Mai", "Juni", "Juli", "Aug.", "Sept.", "Okt.", "Nov.", "Dez."),
    ),
    "es": (
        ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
         "noviembre", "diciembre"),
        ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sept", "oct", "nov", "dic"),
    ),
}

# (full names, abbreviations), Monday first as ``date.weekday()``.
WEEKDAYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    ),
    "fr": (
        ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
        ("lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."),
    ),
    "de": (
        ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
        ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So"),
    ),
    "es": (
        ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
        ("lun", "mar", "mié", "jue", "vie", "sáb", "dom"),
    ),
}

# Fields: {d} day, {dd} 2-digit day, {m}, {mm}, {yyyy}, {yy}, {month}, {mon} (abbreviation),
# {wd} weekday, {wda} weekday abbreviation, {ord} ordinal day (en "3rd", fr "1er"/"3").
DATE_FORMATS: dict[str, tuple[str, ...]] = {
    "en": (
        "{month} {ord}, {yyyy}", "{month} {d}, {yyyy}", "{d} {month} {yyyy}", "{mon} {d} {yyyy}",
        "{d} {mon} {yyyy}", "{wd}, {month} {d}, {yyyy}", "{wd} {dd}.{mm}.{yy}", "{wda}, {d} {mon} {yyyy}",
        "the {ord} of {month}, {yyyy}", "{wd} the {ord} of {month} {yyyy}", "{dd}/{mm}/{yyyy}",
        "{yyyy}/{m}/{d}", "{mon} {ord} {yy}", "{wda} {mon} {d} {yyyy}", "{d}/{m}/{yy}",
    ),
    "fr": (
        "{ord} {month} {yyyy}", "le {ord} {month} {yyyy}", "{wd} {ord} {month} {yyyy}",
        "le {wd} {ord} {month} {yyyy}", "{wd} {dd}/{mm}/{yyyy}", "{dd}/{mm}/{yyyy}", "{d} {mon} {yyyy}",
        "{wda} {d} {mon} {yy}", "{dd}/{mm}/{yy}", "{d} {month} {yy}",
    ),
    "de": (
        "{d}. {month} {yyyy}", "{wd}, {d}. {month} {yyyy}", "{wda}, {dd}.{mm}.{yy}", "{dd}.{mm}.{yyyy}",
        "{d}.{m}.{yyyy}", "am {d}. {month} {yyyy}", "{d}. {mon} {yyyy}", "{wd}, den {d}. {month} {yyyy}",
        "{wda}, {d}. {mon} {yy}", "{d}.{m}.{yy}",
    ),
    "es": (
        "{d} de {month} de {yyyy}", "{wd}, {d} de {month} de {yyyy}", "el {d} de {month} de {yyyy}",
        "{d} {mon} {yyyy}", "{dd}/{mm}/{yyyy}", "{d}-{mon}-{yyyy}", "{wd} {d}/{m}/{yy}",
        "{wda}, {d} {mon} {yy}", "el {wd} {d} de {month} de {yyyy}", "{d} de {month} del {yyyy}",
    ),
}


def _ordinal(day: int, lang: str) -> str:
    if lang == "fr":
        return "1er" if day == 1 else str(day)
    if lang == "en":
        suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
        return f"{day}{suffix}"
    return f"{day}."


def format_date(date: dt.date, lang: str, template: str) -> str:
    """Render ``date`` in language ``lang`` with a :data:`DATE_FORMATS` template.

    Example: ``format_date(date(2019, 3, 3), "fr", "le {ord} {month} {yyyy}") == "le 3 mars 2019"``.
    """
    if lang not in MONTHS:
        raise ValueError(f"language must be one of {DATE_LANGUAGES}, got {lang!r}")
    months, mons = MONTHS[lang]
    wds, wdas = WEEKDAYS[lang]
    return template.format(
        d=date.day, dd=f"{date.day:02d}", m=date.month, mm=f"{date.month:02d}", yyyy=f"{date.year:04d}",
        yy=f"{date.year % 100:02d}", month=months[date.month - 1], mon=mons[date.month - 1],
        wd=wds[date.weekday()], wda=wdas[date.weekday()], ord=_ordinal(date.day, lang),
    )


def _check_years(start_year: int, end_year: int) -> None:
    if not 1 <= start_year <= end_year <= 9999:
        raise ValueError(f"need 1 <= start_year <= end_year <= 9999, got {start_year=}, {end_year=}")


def date_pairs(
    n: int,
    *,
    seed: int = 0,
    languages: Sequence[str] = DATE_LANGUAGES,
    start_year: int = 1950,
    end_year: int = 2049,
    lowercase_p: float = 0.1,
) -> list[tuple[str, str]]:
    """``n`` random ``(human-readable date, ISO date)`` pairs, deterministic from ``seed``.

    Args:
        n: number of pairs (duplicates possible; see :func:`date_splits` for distinct sources).
        seed: random seed.
        languages: subset of :data:`DATE_LANGUAGES`, drawn uniformly.
        start_year, end_year: dates are drawn uniformly from Jan 1 of one to Dec 31 of the other.
        lowercase_p: chance that a source is written all lower case.

    Returns:
        ``[(source, "YYYY-MM-DD"), ...]``.
    """
    _check_years(start_year, end_year)
    unknown = [l for l in languages if l not in DATE_FORMATS]
    if unknown or not languages:
        raise ValueError(f"languages must be a non-empty subset of {DATE_LANGUAGES}, got {list(languages)}")
    two_digit_ok = end_year - start_year < 100
    formats = {
        l: [f for f in DATE_FORMATS[l] if two_digit_ok or "{yy}" not in f] for l in languages
    }
    first = dt.date(start_year, 1, 1).toordinal()
    last = dt.date(end_year, 12, 31).toordinal()
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        date = dt.date.fromordinal(rng.randint(first, last))
        lang = rng.choice(list(languages))
        source = format_date(date, lang, rng.choice(formats[lang]))
        if rng.random() < lowercase_p:
            source = source.lower()
        pairs.append((source, date.isoformat()))
    return pairs


def _distinct_splits(
    make: Callable[[int, int], list[tuple[str, str]]], sizes: tuple[int, int, int], seed: int
) -> dict[str, list[tuple[str, str]]]:
    """Draw pairs until ``sum(sizes)`` distinct sources are found, then cut them into three sets."""
    if min(sizes) < 0:
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    want = sum(sizes)
    seen: dict[str, str] = {}
    for round_ in range(100):
        for src, tgt in make(want - len(seen), seed + 7919 * round_):
            seen.setdefault(src, tgt)
        if len(seen) >= want:
            break
    else:
        raise ValueError(f"only {len(seen)} distinct sources could be generated, {want} wanted")
    items = list(seen.items())
    a, b = sizes[0], sizes[0] + sizes[1]
    return {"train": items[:a], "validation": items[a:b], "test": items[b:want]}


def date_splits(
    n_train: int, n_val: int, n_test: int, *, seed: int = 0, **kwargs
) -> dict[str, list[tuple[str, str]]]:
    """Train / validation / test date pairs; no source string is in two sets.

    Args:
        n_train, n_val, n_test: set sizes.
        seed: random seed.
        **kwargs: passed to :func:`date_pairs` (languages, years, lowercase_p).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}`` of ``(source, target)`` pairs.
    """
    return _distinct_splits(lambda n, s: date_pairs(n, seed=s, **kwargs), (n_train, n_val, n_test), seed)


def date_tokenizer() -> CharTokenizer:
    """A character tokenizer covering every character any date source or ISO target can contain
    (all languages, both cases), so no sample of the task ever meets ``<unk>``."""
    chars = set("0123456789-")
    for table in (MONTHS, WEEKDAYS):
        for full, abbreviations in table.values():
            for name in full + abbreviations:
                chars.update(name + name.lower())
    for templates in DATE_FORMATS.values():
        for template in templates:
            literal = "".join(part.split("}")[-1] for part in template.split("{"))
            chars.update(literal + literal.lower())
    chars.update("stndrhe")  # ordinal suffixes: 1st 2nd 3rd 4th, 1er
    return CharTokenizer(sorted(chars))


def _symbols(n: int, seed: int, min_len: int, max_len: int, alphabet: str) -> list[str]:
    if not 1 <= min_len <= max_len or not alphabet:
        raise ValueError(f"need 1 <= min_len <= max_len and a non-empty alphabet, got {min_len=}, {max_len=}")
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]


def copy_pairs(
    n: int, *, seed: int = 0, min_len: int = 1, max_len: int = 10, alphabet: str = "0123456789"
) -> list[tuple[str, str]]:
    """``(s, s)`` for random strings ``s`` of ``min_len..max_len`` symbols from ``alphabet``."""
    return [(s, s) for s in _symbols(n, seed, min_len, max_len, alphabet)]


def reverse_pairs(
    n: int, *, seed: int = 0, min_len: int = 1, max_len: int = 10, alphabet: str = "0123456789"
) -> list[tuple[str, str]]:
    """``(s, reversed s)`` for random strings ``s``."""
    return [(s, s[::-1]) for s in _symbols(n, seed, min_len, max_len, alphabet)]


def sort_pairs(
    n: int, *, seed: int = 0, min_len: int = 1, max_len: int = 10, alphabet: str = "0123456789"
) -> list[tuple[str, str]]:
    """``(s, sorted s)``, sorted in ``alphabet`` order."""
    rank = {c: i for i, c in enumerate(alphabet)}
    return [(s, "".join(sorted(s, key=rank.__getitem__))) for s in _symbols(n, seed, min_len, max_len, alphabet)]


SEQUENCE_TASKS: dict[str, Callable[..., list[tuple[str, str]]]] = {
    "copy": copy_pairs,
    "reverse": reverse_pairs,
    "sort": sort_pairs,
}


def sequence_splits(
    task: str, n_train: int, n_val: int, n_test: int, *, seed: int = 0, **kwargs
) -> dict[str, list[tuple[str, str]]]:
    """Train / validation / test sets of a :data:`SEQUENCE_TASKS` task with disjoint sources."""
    if task not in SEQUENCE_TASKS:
        raise ValueError(f"task must be one of {sorted(SEQUENCE_TASKS)}, got {task!r}")
    make = SEQUENCE_TASKS[task]
    return _distinct_splits(lambda n, s: make(n, seed=s, **kwargs), (n_train, n_val, n_test), seed)
