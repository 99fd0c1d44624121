"""Scorers, read in each scoring style. Expected values follow the evaluation scripts' rules, not hfprune:

- ``official``: LLaVA's ``llava/eval`` (copied by TinyLLaVA Factory): ``convert_gqa_for_eval.py`` + GQA's
  ``eval.py``, ``eval_science_qa.py``, ``eval_pope.py``, ``m4c_evaluator.py``; MM-Vet's evaluator.
- ``lmms_eval``: lmms-eval's task code (``gqa.yaml`` exact_match, ``scienceqa/utils.py``, ``pope/utils.py``,
  ``textvqa/utils.py``, ``mmvet/utils.py``).
"""

import json
import math

import pytest

from hfprune.errors import HfpruneError
from hfprune.evaluation.benchmarks import JudgeConfig, Prediction, load_spec, parse_spec, score_predictions
from hfprune.evaluation.benchmarks.judge import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, grading_prompt
from hfprune.evaluation.benchmarks.scorers import JUDGE_CACHE, binary_metrics
from hfprune.evaluation.benchmarks.styles import STYLES, get_style
from hfprune.evaluation.benchmarks.vqa_normalize import normalize_answer, vqa_accuracy
from hfprune.evaluation.benchmarks.spec import EVAL_DIR
from judge_server import JudgeServer
from waiting import patience

OFFICIAL, LMMS = STYLES["official"], STYLES["lmms_eval"]


def pred(output, references, sample_id="s", **meta):
    return Prediction(sample_id, output, list(references), meta)


def score(name, predictions, tmp_path=None, style=None, **kwargs):
    return score_predictions(load_spec(name), predictions, tmp_path or "unused", style=style, **kwargs)


# --- EvalAI answer processor (TextVQA, both styles) -------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"),  # number words
        ("ten dollars", "10 dollars"),
        ("none", "0"),
        ("the cat", "cat"),  # articles
        ("A dog", "dog"),
        ("an apple", "apple"),
        ("yes.", "yes"),  # a period not followed by a digit goes
        ("3.5", "3.5"),  # a decimal point stays
        ("t-shirt", "t shirt"),  # punctuation touching no space becomes a space
        ("coca - cola", "coca cola"),  # punctuation touching a space is deleted
        ("(none)", "0"),
        ("hello, world!", "hello world"),
        ("10,000", "10000"),  # commas go first, so the digit-comma rule never applies
        ("What?", "what"),
        ("dont", "don't"),  # contractions from the table
        ("isnt", "isn't"),
        ("youre", "you're"),
        ("couldnt've", "couldn't've"),
        ("it's", "it 's"),  # 's is split off
        ("its", "its"),
        ("  Line\none\ttwo ", "line 1 2"),
        # the table's quirks, as the script has them
        ("couldntve", "couldntve"),  # missing from the table
        ("yalldve", "yalldve"),
        ("shes", "shes"),
        ("Im", "im"),  # the key is 'Im' but the text is lowercased first
        ("ive", "ive"),
        ("Id've", "id've"),
        ("somebody'd", "somebodyd"),  # mapped the wrong way round
        ("somebodyd", "somebodyd"),
        ("." * 40, "." * 8),  # re.UNICODE (32) passed as re.sub's count: only 32 periods go
        ("a." * 33, "a" * 32 + "a."),
    ],
)
def test_evalai_answer_processor(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_leave_one_out(matches, expected):
    # m matches among 10: leaving out a match leaves m-1, leaving out another leaves m;
    # accuracy = (m * min(1, (m-1)/3) + (10-m) * min(1, m/3)) / 10, e.g. m=3: (3*2/3 + 7*1)/10 = 0.9
    references = ["stop"] * matches + [f"other{i}" for i in range(10 - matches)]
    assert vqa_accuracy("stop", references) == pytest.approx(expected)


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("Two.", ["2"] * 2 + ["two"] + ["three"] * 7, 0.9),
        ("couldntve", ["couldn't've"] * 10, 0.0),  # no 'couldntve' key: the strings differ
        ("Im", ["i'm"] * 10, 0.0),  # 'Im' never matches lowercased text
        ("somebodyd", ["somebody'd"] * 10, 1.0),  # both become 'somebodyd'
        ("yes" + "." * 33, ["yes"] * 10, 0.0),  # the 33rd period stays: 'yes.'
    ],
)
def test_textvqa_ten_answer_sets_score_as_the_official_evaluator(prediction, answers, expected, tmp_path):
    for style in STYLES:  # lmms-eval uses the same processor
        result = score("textvqa", [pred(prediction, answers)], style=style)
        assert result["per_sample"][0]["score"] == pytest.approx(expected), style


# --- GQA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, reference, official, lmms_eval",
    [
        ("Yes.", "yes", 1, 1),
        ("  Red \n", "red", 1, 1),  # the generated text is stripped first
        ("RED", "red", 1, 1),
        ("Dog...", "dog", 1, 1),  # every trailing period goes (official)
        ("red .", "red", 0, 0),  # 'red ' is not 'red'
        ("red!", "red", 0, 1),  # lmms-eval removes all punctuation
        ("t-shirt", "tshirt", 0, 1),
        (".red", "red", 0, 1),
        ("red car", "red", 0, 0),
        ("The table", "table", 0, 0),  # articles stay
        ("Red", "Red", 0, 1),  # the reference is not lowercased by GQA's eval.py
    ],
)
def test_gqa(output, reference, official, lmms_eval):
    for style, expected in (("official", official), ("lmms_eval", lmms_eval)):
        result = score("gqa", [pred(output, [reference])], style=style)
        assert result["per_sample"][0]["score"] == expected, style
        assert result["metrics"] == {"score": 100.0 * expected, "num_samples": 1}


def test_gqa_parsed_text():
    result = score("gqa", [pred("Dog...", ["dog"]), pred("Red.", ["red"])])
    assert [s["parsed"] for s in result["per_sample"]] == ["dog", "red"]


# --- ScienceQA-IMG --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, official",
    [
        ("A", "A"),
        (" B \n", "B"),
        ("B. The bird can fly.", "B"),  # a letter followed by '. '
        ("The answer is D.", "D"),
        ("weather. The answer is B.", "B"),  # the single match anywhere in the text
        ("The answer is D, because x", "D"),  # '.' in the pattern is any character
        ("The answer is E. B", None),  # E: one match, but only four choices
        ("The answer is A. The answer is B.", None),  # two matches
        ("The answer is B", None),  # nothing after the letter for the pattern's '.'
        ("the answer is C.", None),  # case matters
        ("C.", None),
        ("A)", None),
        ("B) text", None),
        ("B.\ntext", None),
        ("E", None),  # only four choices
        ("F", None),  # not an option letter at all
        ("b", None),
        ("Answer: B", None),
        ("AB", None),
        ("I think B", None),
        ("B.C", None),
        ("", None),
    ],
)
def test_sqa_official_letters(output, official):
    parsed, _ = OFFICIAL.sqa(output, "A", 4)
    assert parsed == official


def test_sqa_official_letter_e_with_five_choices():
    assert OFFICIAL.sqa("The answer is E. B", "E", 5) == ("E", True)
    assert OFFICIAL.sqa("The answer is F.", "F", 6) == (None, False)  # the script's options stop at E


@pytest.mark.parametrize(
    "output, reference, expected",
    [
        ("B", "B", 1),
        ("b", "B", 1),  # a lowercase letter
        ("A.B", "A", 1),  # an upper-case character followed by '.'
        ("C.", "C", 1),
        ("B. text", "B", 1),
        ("b.", "B", 0),
        ("B)", "B", 0),
        ("The answer is B.", "B", 0),
        ("C", "B", 0),
        ("", "B", 0),
    ],
)
def test_sqa_lmms_eval(output, reference, expected):
    assert LMMS.sqa(output, reference, 3)[1] == bool(expected)


def test_sqa_scorer_counts_only_letters_within_the_choices():
    result = score(
        "sqa_img",
        [
            pred("B", ["B"], "a", choices=["x", "y"]),
            pred("C", ["B"], "b", choices=["x", "y", "z"]),
            pred("The answer is A.", ["A"], "c", choices=["x", "y", "z"]),
            pred("C", ["C"], "d", choices=["x", "y"]),  # C is no choice: wrong even if it matched
        ],
    )
    assert [s["parsed"] for s in result["per_sample"]] == ["B", "C", "A", None]
    assert [s["score"] for s in result["per_sample"]] == [1, 0, 1, 0]
    assert result["metrics"]["score"] == 50.0


# --- POPE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, official",
    [
        ("Yes", "yes"),
        ("Yes, there is a dog in the image.", "yes"),
        ("No.", "no"),
        ("No", "no"),
        ("no, there is not", "no"),  # commas are deleted before splitting
        ("There is not a cat in the image.", "no"),
        ("no  cat", "no"),  # split on single spaces
        # the script reads these as yes: the words must be exactly No, not or no
        ("NO", "yes"),
        ("Not really.", "yes"),
        ("No!", "yes"),
        ("No?", "yes"),
        ("(no)", "yes"),
        ("no;", "yes"),
        ('"No"', "yes"),
        ("no\tthere", "yes"),
        ("Nothing suggests otherwise", "yes"),
        ("", "yes"),
        # only the text before the first '.' counts
        ("Yes? No.", "no"),
        ("Yes. There is no cat.", "yes"),
    ],
)
def test_pope_official_reading(output, official):
    assert OFFICIAL.pope(output) == official


@pytest.mark.parametrize(
    "output, lmms_eval",
    [("Yes", "yes"), (" NO \n", "no"), ("yes", "yes"), ("No.", None), ("Yes, there is.", None), ("", None)],
)
def test_pope_lmms_eval_reading(output, lmms_eval):
    assert LMMS.pope(output) == lmms_eval


def test_pope_metrics_from_a_confusion_matrix():
    # adversarial: TP=3, FP=1, FN=2, TN=4 → acc 70, precision 75, recall 60, F1 2*.75*.6/1.35, yes 40
    cases = [("yes", "yes")] * 3 + [("yes", "no")] + [("no", "yes")] * 2 + [("no", "no")] * 4
    predictions = [pred(p, [t], f"adv-{i}", category="adversarial") for i, (p, t) in enumerate(cases)]
    predictions += [pred("Yes.", ["yes"], "rnd-0", category="random"), pred("No", ["no"], "rnd-1", category="random")]
    result = score("pope", predictions)
    metrics = result["metrics"]
    f1 = 100 * 2 * 0.75 * 0.6 / 1.35
    assert metrics["adversarial.accuracy"] == pytest.approx(70)
    assert metrics["adversarial.precision"] == pytest.approx(75)
    assert metrics["adversarial.recall"] == pytest.approx(60)
    assert metrics["adversarial.f1"] == pytest.approx(f1)
    assert metrics["adversarial.yes_ratio"] == pytest.approx(40)  # of the predictions
    assert metrics["adversarial.num_samples"] == 10
    assert metrics["random.f1"] == pytest.approx(100)
    assert metrics["score"] == pytest.approx((f1 + 100) / 2)  # mean F1 over the splits
    assert metrics["num_samples"] == 12
    assert result["per_sample"][-2]["parsed"] == "yes" and result["style"] == "official"


def test_pope_lmms_eval_metrics():
    # 'Yes.' is neither yes nor no: wrong, and in neither class; the yes-ratio counts the references
    predictions = [pred("yes", ["yes"], "a"), pred("Yes.", ["yes"], "b"), pred("no", ["no"], "c"),
                   pred("No, there is none", ["no"], "d")]
    metrics = score("pope", predictions, style="lmms_eval")["metrics"]
    assert metrics["all.accuracy"] == pytest.approx(50)
    assert metrics["all.precision"] == pytest.approx(100)  # TP 1, FP 0
    assert metrics["all.recall"] == pytest.approx(100)  # TP 1, FN 0: 'Yes.' is no false negative
    assert metrics["all.yes_ratio"] == pytest.approx(50)  # 2 of 4 references are yes
    official = score("pope", predictions)["metrics"]
    assert official["all.accuracy"] == pytest.approx(100) and official["all.yes_ratio"] == pytest.approx(50)


def test_pope_degenerate_splits_and_bad_references():
    assert binary_metrics([("no", "no")]) == {"accuracy": 100, "precision": 0, "recall": 0, "f1": 0, "yes_ratio": 0}
    assert binary_metrics([("no", "no")], yes_ratio_of_references=True)["yes_ratio"] == 0
    with pytest.raises(HfpruneError, match="expected 'yes' or 'no'"):
        score("pope", [pred("yes", ["maybe"])])


# --- styles ---------------------------------------------------------------------------------------


def test_the_spec_chooses_the_style_and_a_flag_overrides_it(tmp_path):
    predictions = [pred("b", ["B"], choices=["x", "y"])]
    data = json.loads(json.dumps(load_spec("sqa_img").model_dump()))
    assert data["scoring"] == {"style": "official"}
    data["scoring"] = {"style": "lmms_eval"}
    spec = parse_spec(data)
    assert score_predictions(spec, predictions, tmp_path)["metrics"]["score"] == 100
    assert score_predictions(spec, predictions, tmp_path, style="official")["metrics"]["score"] == 0
    with pytest.raises(HfpruneError, match="unknown scoring style 'llava'; choose one of: official, lmms_eval"):
        score_predictions(spec, predictions, tmp_path, style="llava")
    data["scoring"] = {"style": "llava"}
    with pytest.raises(HfpruneError, match="scoring.style: unknown scoring style 'llava'"):
        parse_spec(data)


def test_every_shipped_spec_says_its_style():
    for path in EVAL_DIR.glob("*.yaml"):
        assert "\nscoring:\n  style: official" in path.read_text(), path.name
    assert get_style("official") is OFFICIAL


# --- MM-Vet judge -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, official, lmms_eval",
    [
        ("0.7", 0.7, 0.7),
        ("1", 1.0, 1.0),
        ("0.0", 0.0, 0.0),
        ("0.8 because the prediction misses one element", 0.8, 0.8),  # up to the first space
        ("0.5\n", 0.5, 0.5),
        (" 0.5", None, 0.5),  # the evaluator splits before stripping: the first piece is empty
        ("Correctness: 0.5", None, None),
        ("1.0.", None, None),
        ("The score is .3", None, None),
        ("1.5", None, None),  # out of range: asked again
        ("-0.1", None, None),
        ("0.5\nbecause", None, None),  # no space: the whole reply is no number
        ("no idea", None, None),
        ("", None, None),
        (" \n", None, None),
    ],
)
def test_mmvet_grade_reading(reply, official, lmms_eval):
    for style, expected in ((OFFICIAL, official), (LMMS, lmms_eval)):
        assert style.judge_grade(reply) == (None if expected is None else pytest.approx(expected)), style.name


def test_mmvet_official_reading_lets_nan_through_like_the_evaluator():
    assert math.isnan(OFFICIAL.judge_grade("nan")) and LMMS.judge_grade("nan") is None


def test_grading_prompt_is_the_few_shot_table_with_the_answer_as_last_row():
    prompt = grading_prompt("What is x?", "-1<AND>-5", "x = -1\nor -5")
    assert "Question | Ground truth | Prediction | Correctness" in prompt
    assert prompt.count("What is x in the equation? | -1 <AND> -5 |") == 5
    assert prompt.endswith("\nWhat is x? | -1 <AND> -5 | x = -1 or -5 | ")


@pytest.fixture
def no_judge_env(monkeypatch):
    for name in ENV_BASE_URL + ENV_MODEL + ENV_API_KEY:
        monkeypatch.delenv(name, raising=False)


def test_judge_config_from_flags_and_environment(no_judge_env, monkeypatch):
    assert JudgeConfig.resolve() is None
    monkeypatch.setenv("OPENAI_BASE_URL", "http://fallback/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
    monkeypatch.setenv("HFPRUNE_JUDGE_MODEL", "judge")
    config = JudgeConfig.resolve()
    assert (config.base_url, config.model, config.api_key) == ("http://fallback/v1", "judge", "sk-fallback")
    monkeypatch.setenv("HFPRUNE_JUDGE_BASE_URL", "http://judge/v1")
    monkeypatch.setenv("HFPRUNE_JUDGE_API_KEY", "sk-judge")
    assert JudgeConfig.resolve().base_url == "http://judge/v1"
    flagged = JudgeConfig.resolve(base_url="http://flag/v1", model="m", api_key="sk-flag")
    assert (flagged.base_url, flagged.model, flagged.api_key) == ("http://flag/v1", "m", "sk-flag")
    assert "sk-flag" not in repr(flagged)


def mmvet_predictions():
    return [
        pred("x = -1 or x = -5", ["-1<AND>-5"], "v1_0", question="What is x?", capabilities=["ocr", "math"]),
        pred("It is 3", ["1.25<OR>5/4"], "v1_1", question="What is d?", capabilities=["ocr", "math"]),
        pred("A giraffe.", ["giraffe"], "v1_2", question="What animal?", capabilities=["rec"]),
    ]


def test_mmvet_judge_end_to_end_with_cache(tmp_path, no_judge_env):
    spec = load_spec("mmvet")
    key = "sk-secret-0123456789"
    with JudgeServer(api_key=key) as server:
        judge = JudgeConfig(server.base_url, "judge-model", key, retry_delay=0)
        result = score_predictions(spec, mmvet_predictions(), tmp_path, judge)
        assert len(server.requests) == 3
        assert {r["authorization"] for r in server.requests} == {f"Bearer {key}"}
        assert server.requests[0]["body"]["model"] == "judge-model"
        rerun = score_predictions(spec, mmvet_predictions(), tmp_path, judge)
        assert len(server.requests) == 3  # every grade came from the cache
    metrics = result["metrics"]
    assert metrics["score"] == pytest.approx(200 / 3)
    assert metrics["cap.ocr"] == pytest.approx(50) and metrics["cap.math"] == pytest.approx(50)
    assert metrics["cap.rec"] == pytest.approx(100)
    assert metrics["unparsed"] == 0
    assert rerun == result
    cache = (tmp_path / JUDGE_CACHE).read_text()
    assert len(cache.splitlines()) == 3 and key not in cache
    assert all(set(json.loads(line)) == {"key", "score", "reply", "unparsed"} for line in cache.splitlines())


def test_mmvet_judge_uses_the_environment_and_retries_server_errors(tmp_path, no_judge_env, monkeypatch):
    with JudgeServer(fail_first=2) as server:
        monkeypatch.setenv("HFPRUNE_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("HFPRUNE_JUDGE_MODEL", "judge-model")
        monkeypatch.setattr("hfprune.evaluation.benchmarks.judge.time.sleep", lambda seconds: None)
        result = score_predictions(load_spec("mmvet"), mmvet_predictions()[:1], tmp_path)
        assert len(server.requests) == 3  # two 503s, then the grade
        assert server.requests[0]["authorization"] is None
    assert result["per_sample"][0]["score"] == 1.0


def test_mmvet_unparseable_replies_score_zero_and_are_flagged(tmp_path):
    with JudgeServer(reply=lambda prompt: "I cannot grade this") as server:
        judge = JudgeConfig(server.base_url, "judge-model", retry_delay=0)
        result = score_predictions(load_spec("mmvet"), mmvet_predictions()[:1], tmp_path, judge)
        assert len(server.requests) == 3  # asked three times, the later ones with a nudge
        assert server.requests[1]["body"]["messages"][0]["content"].endswith("a number from 0.0 to 1.0:")
        score_predictions(load_spec("mmvet"), mmvet_predictions()[:1], tmp_path, judge)
        assert len(server.requests) == 3
    assert result["per_sample"][0]["score"] == 0.0 and result["per_sample"][0]["unparsed"] is True
    assert result["metrics"]["unparsed"] == 1


def test_mmvet_judge_replies_are_read_in_the_style_and_cached_per_style(tmp_path):
    with JudgeServer(reply=lambda prompt: " 1.0") as server:  # a leading space
        judge = JudgeConfig(server.base_url, "judge-model", retry_delay=0)
        official = score_predictions(load_spec("mmvet"), mmvet_predictions()[:1], tmp_path, judge)
        assert len(server.requests) == 3  # unusable for the official reading: asked three times
        lmms = score_predictions(load_spec("mmvet"), mmvet_predictions()[:1], tmp_path, judge, style="lmms_eval")
        assert len(server.requests) == 4  # another style is another cache entry
        score_predictions(load_spec("mmvet"), mmvet_predictions()[:1], tmp_path, judge, style="lmms_eval")
        assert len(server.requests) == 4
    assert official["per_sample"][0]["unparsed"] is True and official["metrics"]["score"] == 0
    assert lmms["per_sample"][0]["score"] == 1.0 and lmms["style"] == "lmms_eval"


def test_mmvet_judge_errors_never_show_the_key(tmp_path):
    with JudgeServer(api_key="sk-right") as server:
        judge = JudgeConfig(server.base_url, "judge-model", "sk-wrong-key-42", retry_delay=0)
        with pytest.raises(HfpruneError, match="HTTP 401") as error:
            score_predictions(load_spec("mmvet"), mmvet_predictions()[:1], tmp_path, judge)
        assert len(server.requests) == 1  # a 401 is not retried
    assert "sk-wrong-key-42" not in str(error.value) and "***" in str(error.value)
    assert not (tmp_path / JUDGE_CACHE).exists()


def test_mmvet_unreachable_judge_is_a_clear_error(tmp_path):
    with JudgeServer() as server:
        url = server.base_url
    judge = JudgeConfig(url, "judge-model", "sk-key", timeout=patience(2), attempts=2, retry_delay=0)
    with pytest.raises(HfpruneError, match="failed after 2 attempt") as error:
        score_predictions(load_spec("mmvet"), mmvet_predictions()[:1], tmp_path, judge)
    assert "sk-key" not in str(error.value)


def test_mmvet_without_a_judge_says_how_to_configure_one(tmp_path, no_judge_env):
    with pytest.raises(HfpruneError, match="MM-Vet needs an LLM judge: set HFPRUNE_JUDGE_BASE_URL"):
        score_predictions(load_spec("mmvet"), mmvet_predictions(), tmp_path)


def test_nothing_to_score_is_an_error(tmp_path):
    with pytest.raises(HfpruneError, match="no predictions"):
        score_predictions(load_spec("gqa"), [], tmp_path)
