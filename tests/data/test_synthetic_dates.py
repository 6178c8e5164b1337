"""Dates: every source parses back (with tables written here, not imported) to its ISO target,
weekday names are right, one source never has two targets, seeds and splits behave."""

import datetime as dt
import re
from collections import Counter

import pytest

from qkv.data.synthetic import DATE_FORMATS, DATE_LANGUAGES, date_pairs, date_splits, date_tokenizer, format_date

MONTH_WORDS = {
    1: "january jan janvier janv januar enero ene",
    2: "february feb février févr februar febrero",
    3: "march mar mars märz marzo",
    4: "april apr avril avr abril abr",
    5: "may mai mayo",
    6: "june jun juin juni junio",
    7: "july jul juillet juil juli julio",
    8: "august aug août agosto ago",
    9: "september sep sept septembre septiembre",
    10: "october oct octobre oktober okt octubre",
    11: "november nov novembre noviembre",
    12: "december dec décembre déc dezember dez diciembre dic",
}
WEEKDAY_WORDS = {  # date.weekday(): Monday = 0
    0: "monday mon lundi lun montag mo lunes",
    1: "tuesday tue mardi mar dienstag di martes",
    2: "wednesday wed mercredi mer mittwoch mi miércoles mié",
    3: "thursday thu jeudi jeu donnerstag do jueves jue",
    4: "friday fri vendredi ven freitag fr viernes vie",
    5: "saturday sat samedi sam samstag sa sábado sáb",
    6: "sunday sun dimanche dim sonntag so domingo dom",
}
FILLER = set("the of st nd rd th le er am den el de del".split())


def meanings(table):
    out = {}
    for value, words in table.items():
        for w in words.split():
            out.setdefault(w, set()).add(value)
    return out


MONTHS, WEEKDAYS = meanings(MONTH_WORDS), meanings(WEEKDAY_WORDS)


def year_of(token: str) -> int:
    y = int(token)
    return y if len(token) == 4 else (1900 + y if y >= 50 else 2000 + y)


def parse(source: str) -> tuple[dt.date, set[int]]:
    """Independent parser: the date a source means, and the weekdays its words could name."""
    tokens = re.findall(r"[^\W\d_]+|\d+", source.lower())
    numbers = [t for t in tokens if t.isdigit()]
    words = [t for t in tokens if not t.isdigit()]
    unknown = [w for w in words if w not in MONTHS and w not in WEEKDAYS and w not in FILLER]
    assert not unknown, f"unknown words {unknown} in {source!r}"
    month_words = [w for w in words if w in MONTHS]
    if len(numbers) == 3:  # numeric: year first or day first, never month first
        if len(numbers[0]) == 4:
            y, m, d = int(numbers[0]), int(numbers[1]), int(numbers[2])
        else:
            d, m, y = int(numbers[0]), int(numbers[1]), year_of(numbers[2])
        return dt.date(y, m, d), {v for w in words for v in WEEKDAYS.get(w, ())}
    assert len(numbers) == 2 and month_words, f"cannot parse {source!r}"
    # a word that is only a month fixes it; 'mar' alone may be March or (fr/es) Tuesday
    sure = [MONTHS[w] for w in month_words if w not in WEEKDAYS]
    candidates = set.intersection(*sure) if sure else set.union(*(MONTHS[w] for w in month_words))
    assert len(candidates) == 1, f"month of {source!r} is ambiguous: {candidates}"
    date = dt.date(year_of(numbers[1]), candidates.pop(), int(numbers[0]))
    weekday_words = [w for w in words if w in WEEKDAYS and (w not in MONTHS or len(month_words) > 1)]
    return date, {v for w in weekday_words for v in WEEKDAYS[w]}


def test_sources_parse_back_with_correct_weekdays():
    pairs = date_pairs(4000, seed=11)
    with_weekday = 0
    for source, target in pairs:
        date = dt.date.fromisoformat(target)
        assert 1950 <= date.year <= 2049
        parsed, weekdays = parse(source)
        assert parsed == date, (source, target)
        if weekdays:
            with_weekday += 1
            assert date.weekday() in weekdays, (source, target, date.strftime("%A"))
    assert with_weekday > 400  # weekday formats are well represented


def test_examples_from_the_issue_are_among_the_formats():
    day = dt.date(2019, 3, 3)
    rendered = {format_date(day, lang, f) for lang, fs in DATE_FORMATS.items() for f in fs}
    for example in [
        "3 mars 2019", "March 3rd, 2019", "Sunday 03.03.19", "03/03/2019", "le 3 mars 2019", "3. März 2019",
        "domingo, 3 de marzo de 2019", "Mar 3 2019", "2019/3/3", "dimanche 3 mars 2019", "Sonntag, 3. März 2019",
    ]:
        assert example in rendered
    assert format_date(dt.date(2021, 1, 1), "fr", "le {ord} {month} {yyyy}") == "le 1er janvier 2021"
    assert [format_date(dt.date(2020, 5, d), "en", "{ord}") for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd"
    ]


LANGUAGE_WORDS = {
    "en": "january february march april may june july august september october november december jan feb mar apr "
    "jun jul aug sep oct nov dec monday tuesday wednesday thursday friday saturday sunday mon tue wed thu fri sat "
    "sun the of st nd rd th",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre janv févr avr juil "
    "sept oct nov déc lundi mardi mercredi jeudi vendredi samedi dimanche lun mar mer jeu ven sam dim le er",
    "de": "januar februar märz april mai juni juli august september oktober november dezember jan feb apr aug sept "
    "okt nov dez montag dienstag mittwoch donnerstag freitag samstag sonntag mo di mi do fr sa so am den",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre ene feb mar abr "
    "may jun jul ago sept oct nov dic lunes martes miércoles jueves viernes sábado domingo lun mié jue vie sáb dom "
    "de del el",
}


@pytest.mark.parametrize("lang", DATE_LANGUAGES)
def test_each_language_uses_its_own_words(lang):
    allowed = set(LANGUAGE_WORDS[lang].split())
    words = Counter()
    for source, _ in date_pairs(400, seed=0, languages=[lang]):
        for w in re.findall(r"[^\W\d_]+", source.lower()):
            assert w in allowed, f"{w!r} in {source!r} is not a {lang} date word"
            words[w] += 1
    assert len(words) > 20  # month and weekday names, not only numbers


def test_many_formats_are_used():
    shapes = Counter(re.sub(r"\d", "9", s) for s, _ in date_pairs(3000, seed=0))
    assert len(shapes) > 100


def test_one_target_per_source():
    seen: dict[str, str] = {}
    for source, target in date_pairs(20000, seed=3):
        assert seen.setdefault(source, target) == target, (source, seen[source], target)


def test_deterministic_from_seed():
    assert date_pairs(300, seed=5) == date_pairs(300, seed=5)
    assert date_pairs(300, seed=5) != date_pairs(300, seed=6)


def test_lowercase_and_year_range():
    pairs = date_pairs(500, seed=2, lowercase_p=1.0, start_year=2000, end_year=2009)
    assert all(s == s.lower() for s, _ in pairs)
    assert {t[:3] for _, t in pairs} == {"200"}
    wide = date_pairs(1000, seed=2, start_year=1800, end_year=2199)
    for source, target in wide:  # no two-digit years when they would be ambiguous
        years = [t for t in re.findall(r"\d+", source) if len(t) >= 4]
        assert years == [target[:4]], source
    with pytest.raises(ValueError, match="start_year=2000, end_year=1999"):
        date_pairs(1, start_year=2000, end_year=1999)
    with pytest.raises(ValueError, match="languages must be a non-empty subset"):
        date_pairs(1, languages=["it"])


def test_splits_disjoint_and_deterministic():
    splits = date_splits(500, 100, 100, seed=4)
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [500, 100, 100]
    sources = [{s for s, _ in splits[k]} for k in ("train", "validation", "test")]
    assert sum(len(s) for s in sources) == 700 and len(set.union(*sources)) == 700
    assert date_splits(500, 100, 100, seed=4) == splits
    assert date_splits(500, 100, 100, seed=5) != splits


def test_date_tokenizer_covers_every_generated_character():
    tok = date_tokenizer()
    pairs = date_pairs(3000, seed=9, lowercase_p=0.5) + date_pairs(300, seed=9, start_year=1000, end_year=2999)
    for source, target in pairs:
        for text in (source, target):
            ids = tok.encode(text)
            assert tok.unk_id not in ids and tok.decode(ids) == text
    assert tok.vocab_size < 100
