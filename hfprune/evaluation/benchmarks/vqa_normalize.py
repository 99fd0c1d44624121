"""The EvalAI answer processor (as in LLaVA's ``m4c_evaluator.py``, quirks included) and VQA accuracy.

The published TextVQA numbers come from this processor, so it is reproduced as it behaves, not as
it was meant to behave. Applied to predictions and human answers alike:

1. lowercase; drop ``,`` and ``?``; split off ``'s`` (``man's`` → ``man 's``); newlines and tabs
   become spaces; trim;
2. each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a space
   somewhere in the answer, otherwise replaced by a space (``t-shirt`` → ``t shirt``);
3. periods not followed by a digit are deleted, but only the first 32 of them (the script passes
   ``re.UNICODE``, which is 32, as ``re.sub``'s count);
4. number words ``none``, ``zero`` … ``ten`` become digits; articles ``a``, ``an``, ``the`` go;
5. words found in :data:`CONTRACTIONS` are replaced. The table is EvalAI's, entry by entry: its
   capitalised keys (``Im``, ``Ive``, ``Id've``) never match the lowercased words, ``couldntve``,
   ``yalldve`` and ``shes`` are missing, and ``somebody'd`` becomes ``somebodyd``.

The script's comma rule between digits (``1,000``) never fires, because step 1 already removed
every comma.
"""

from __future__ import annotations

import re

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!")
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_LIMIT = 32  # re.UNICODE, passed where re.sub expects its count
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})

# EvalAI's table as "key value" pairs, in its order.
_CONTRACTION_PAIRS = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've
couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've
hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's
howd how'd|howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd
itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't
mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've
neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at
'ow'sat 'ow's'at|shant shan't|shed've she'd've|she'dve she'd've|she's she's|shouldve should've
shouldnt shouldn't|shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd
somebodyd've somebody'd've|somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's
someoned someone'd|someoned've someone'd've|someone'dve someone'd've|someonell someone'll
someones someone's|somethingd something'd|somethingd've something'd've|something'dve something'd've
somethingll something'll|thats that's|thered there'd|thered've there'd've|there'dve there'd've
therere there're|theres there's|theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll
theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've
werent weren't|whatll what'll|whatre what're|whats what's|whatve what've|whens when's|whered where'd
wheres where's|whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's
whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't
wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll
yall'd've y'all'd've|y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've
you'dve you'd've|youll you'll|youre you're|youve you've
"""
CONTRACTIONS = dict(pair.split() for pair in _CONTRACTION_PAIRS.replace("\n", "|").split("|") if pair.strip())


def _punctuation(text: str) -> str:
    out = text
    for mark in _PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space else " ")
    return _PERIOD.sub("", out, count=_PERIOD_LIMIT)


def normalize_answer(answer: str) -> str:
    """An answer as EvalAI's processor leaves it, the form in which VQA answers are compared."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    words = [_NUMBERS.get(word, word) for word in _punctuation(text).lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def vqa_accuracy(prediction: str, references: list[str]) -> float:
    """VQA accuracy in [0, 1]: for each reference left out, min(1, matches among the rest / 3), averaged."""
    answer = normalize_answer(prediction)
    matches = [normalize_answer(reference) == answer for reference in references]
    total = sum(matches)
    return sum(min(1.0, (total - hit) / 3) for hit in matches) / len(matches)
