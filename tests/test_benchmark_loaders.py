"""Benchmark specs and loaders, on fixtures in the Hub schemas (see benchmark_fixtures.py)."""

import pytest
import yaml

from benchmark_fixtures import BUILDERS, CATEGORIES, colour, gqa, pope, write_all, write_fixture
from hfprune.errors import HfpruneError
from hfprune.evaluation.benchmarks import (
    Prediction,
    list_specs,
    load_samples,
    load_spec,
    parse_spec,
    score_predictions,
)
from hfprune.evaluation.benchmarks.spec import EVAL_DIR

SUFFIX = "\nAnswer the question using a single word or phrase."
LAYOUTS = ("hub", "save_to_disk")


def pixel(sample):
    return sample.image.convert("RGB").getpixel((0, 0))


# --- specs ------------------------------------------------------------------------------------


def test_shipped_specs():
    specs = {spec.name: spec for spec in list_specs()}
    assert set(specs) == {"gqa", "sqa_img", "textvqa", "textvqa_ocr", "pope", "mmvet"}
    assert {path.stem for path in EVAL_DIR.glob("*.yaml")} == set(specs)
    assert specs["gqa"].dataset.join.left_on == "imageId"
    assert specs["sqa_img"].dataset.config == "ScienceQA-IMG"
    assert all(spec.generation.greedy for spec in specs.values())
    assert load_spec(EVAL_DIR / "pope.yaml") == specs["pope"]


def spec_dict(**changes):
    data = yaml.safe_load((EVAL_DIR / "gqa.yaml").read_text())
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"promtp": "x"}, "unknown key 'promtp' in the top level; allowed keys: name, description, dataset"),
        ({"dataset": {"hub_id": "x", "split": "test", "subset": "a"}}, "unknown key 'subset' in dataset; allowed keys: hub_id, config, split, join"),
        ({"loader": "nope"}, "loader: unknown loader 'nope'; choose one of: gqa, scienceqa, textvqa, pope, mmvet"),
        ({"scorer": {"name": "bleu"}}, "scorer.name: unknown scorer 'bleu'; choose one of: exact_match"),
        ({"scorer": {"name": "pope", "options": {"split_by": "x"}}}, "scorer 'pope' has no option split_by; its options: group_by"),
        ({"scorer": {"name": "exact_match", "options": {"x": 1}}}, "its options: none"),
        ({"prompt": "{question} {hint}"}, "prompt uses {hint}, which loader 'gqa' does not provide; its fields: question"),
        ({"prompt": "{question"}, "prompt is not a valid template"),
        ({"generation": {"max_new_tokens": 0}}, "generation.max_new_tokens: Input should be greater than 0 (got 0)"),
        ({"name": "Bad Name"}, "name: String should match pattern"),
    ],
)
def test_spec_validation_errors(changes, message):
    with pytest.raises(HfpruneError, match="invalid benchmark spec") as error:
        parse_spec(spec_dict(**changes), source="my.yaml")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_spec_file_errors(tmp_path):
    data = spec_dict()
    del data["scorer"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(HfpruneError, match=r"mine.yaml: scorer: required field is missing"):
        load_spec(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(HfpruneError, match="is not valid YAML at line"):
        load_spec(path)
    path.write_text("- a list\n")
    with pytest.raises(HfpruneError, match="must be a YAML mapping"):
        load_spec(path)
    with pytest.raises(HfpruneError, match="unknown benchmark 'vqav2'; choose one of: gqa, mmvet, pope, sqa_img, "
                                           "textvqa, textvqa_ocr"):
        load_spec("vqav2")
    with pytest.raises(HfpruneError, match="not found"):
        load_spec(tmp_path / "absent.yaml")


def test_a_user_spec_reuses_a_loader_with_its_own_prompt(tmp_path):
    data = yaml.safe_load((EVAL_DIR / "textvqa.yaml").read_text())
    data.update(name="textvqa_ocr", prompt="{question}\nReference OCR token: {ocr_tokens}" + SUFFIX)
    path = tmp_path / "textvqa_ocr.yaml"
    path.write_text(yaml.safe_dump(data))
    samples = load_samples(load_spec(path), str(write_fixture("textvqa", tmp_path)))
    assert samples[0].prompt == "what brand is this?\nReference OCR token: coca, cola" + SUFFIX


def test_textvqa_ocr_asks_as_llavas_question_file(tmp_path):
    """llava_textvqa_val_v051_ocr.jsonl: 'What is ...?\nReference OCR token: A, b\nAnswer the question ...'."""
    from benchmark_fixtures import textvqa

    rows = textvqa()[None].map(lambda row, i: {"ocr_tokens": [] if i == 2 else row["ocr_tokens"]}, with_indices=True)
    samples = load_samples(load_spec("textvqa_ocr"), str(write_fixture("textvqa", tmp_path, configs={None: rows})))
    assert samples[0].prompt == "What brand is this?\nReference OCR token: coca, cola" + SUFFIX
    assert samples[1].prompt == "How many cups are there?\nReference OCR token: 2" + SUFFIX
    assert samples[2].prompt == "What does the sign say?" + SUFFIX  # no OCR tokens: no OCR line (our reading)
    assert load_spec("textvqa").prompt == "{question}" + SUFFIX  # the default asks without them
    assert "textvqa_ocr" in load_spec("textvqa").description and "published" in load_spec("textvqa_ocr").description


# --- loaders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gqa_joins_images_by_image_id(tmp_path, layout):
    samples = load_samples(load_spec("gqa"), str(write_fixture("gqa", tmp_path, layout)))
    questions = gqa()["testdev_balanced_instructions"]
    assert [s.sample_id for s in samples] == questions["id"]
    assert samples[0].prompt == "What color is the car?" + SUFFIX
    assert [s.references for s in samples] == [[a] for a in questions["answer"]]
    image_index = {image_id: int(image_id[1]) - 1 for image_id in questions["imageId"]}  # n100 → image 0
    assert [pixel(s) for s in samples] == [colour(image_index[i]) for i in questions["imageId"]]


def test_gqa_configs_saved_as_single_datasets(tmp_path):
    # the layout the error messages suggest: datasets.load_dataset(id, config, split=...).save_to_disk(DIR/config)
    for config, ds in gqa().items():
        ds.save_to_disk(str(tmp_path / config))
    samples = load_samples(load_spec("gqa"), str(tmp_path), limit=2)
    assert [pixel(s) for s in samples] == [colour(2), colour(0)]


def test_every_fixture_loads_with_its_shipped_spec(tmp_path):
    paths = write_all(tmp_path, layout="save_to_disk")
    assert set(paths) == {spec.name for spec in list_specs()}
    for name, path in paths.items():
        assert len(load_samples(load_spec(name), str(path), limit=2)) == 2


def test_gqa_question_without_its_image_is_an_error(tmp_path):
    configs = gqa()
    configs["testdev_balanced_images"] = configs["testdev_balanced_images"].select([0, 1])
    path = write_fixture("gqa", tmp_path, configs=configs)
    with pytest.raises(HfpruneError, match="imageId='n300' has no match in the joined config's column 'id'"):
        load_samples(load_spec("gqa"), str(path))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scienceqa_image_questions_with_context_and_letters(tmp_path, layout):
    samples = load_samples(load_spec("sqa_img"), str(write_fixture("sqa_img", tmp_path, layout)))
    assert [s.sample_id for s in samples] == ["0", "1", "3"]  # row 2 has no image
    assert samples[0].prompt == (
        "Context: Look at the picture.\nWhich animal can fly?\nA. cat\nB. bird\nC. fish\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert samples[1].prompt.startswith("What is the capital of France?\nA. Paris\nB. Rome\n")  # no hint
    assert [s.references for s in samples] == [["B"], ["A"], ["A"]]
    assert samples[2].meta == {"choices": ["nail", "cork", "glass", "paper"]}
    assert [pixel(s) for s in samples] == [colour(0), colour(1), colour(3)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_textvqa_ten_answers(tmp_path, layout):
    samples = load_samples(load_spec("textvqa"), str(write_fixture("textvqa", tmp_path, layout)))
    assert [s.sample_id for s in samples] == ["34602", "34603", "34604"]
    assert samples[1].prompt == "how many cups are there?" + SUFFIX
    assert all(len(s.references) == 10 for s in samples)
    assert [pixel(s) for s in samples] == [colour(i) for i in range(3)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pope_categories_in_one_split(tmp_path, layout):
    samples = load_samples(load_spec("pope"), str(write_fixture("pope", tmp_path, layout)))
    assert len(samples) == 6  # hub layout: three parquet shards
    assert [s.meta["category"] for s in samples] == [c for c in CATEGORIES for _ in range(2)]
    assert len({s.sample_id for s in samples}) == 6  # question ids restart per category
    assert samples[0].sample_id == "adversarial-1"
    assert samples[1].prompt == "Is there a cat in the image?" + SUFFIX
    assert [s.references for s in samples] == [["yes"], ["no"]] * 3
    assert [pixel(s) for s in samples] == [colour(i) for i in range(6)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mmvet_questions_and_capabilities(tmp_path, layout):
    samples = load_samples(load_spec("mmvet"), str(write_fixture("mmvet", tmp_path, layout)))
    assert [s.sample_id for s in samples] == ["v1_0", "v1_1", "v1_2"]
    assert samples[0].prompt == "What is x in the equation?"
    assert samples[0].references == ["-1<AND>-5"]
    assert samples[0].meta == {"question": "What is x in the equation?", "capabilities": ["ocr", "math"]}
    assert samples[2].meta["capabilities"] == ["rec"]


def test_limit_takes_the_first_samples(tmp_path):
    path = str(write_fixture("sqa_img", tmp_path))
    spec = load_spec("sqa_img")
    assert [s.sample_id for s in load_samples(spec, path, limit=3)] == ["0", "1", "3"]  # counts kept samples
    assert [s.sample_id for s in load_samples(spec, path, limit=1)] == ["0"]
    with pytest.raises(HfpruneError, match="limit must be a positive number"):
        load_samples(spec, path, limit=0)


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"mmvet"}))
def test_reference_answers_score_full_marks(tmp_path, name):
    spec = load_spec(name)
    samples = load_samples(spec, str(write_fixture(name, tmp_path)))
    majority = [max(s.references, key=s.references.count) for s in samples]  # TextVQA: a 3-of-10 answer scores 0.9
    predictions = [Prediction(s.sample_id, m, s.references, s.meta) for s, m in zip(samples, majority)]
    assert score_predictions(spec, predictions, tmp_path)["metrics"]["score"] == pytest.approx(100)


# --- errors -----------------------------------------------------------------------------------


def test_missing_column_is_named(tmp_path):
    configs = {None: pope()[None].remove_columns("category")}
    path = write_fixture("pope", tmp_path, configs=configs)
    with pytest.raises(HfpruneError, match="no column 'category'.*use a copy in the Hub schema"):
        load_samples(load_spec("pope"), str(path))


def test_bad_data_paths(tmp_path):
    spec = load_spec("textvqa")
    with pytest.raises(HfpruneError, match="is not an existing directory.*hf download lmms-lab/textvqa"):
        load_samples(spec, str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HfpruneError, match="no split 'validation' of lmms-lab/textvqa in .*empty"):
        load_samples(spec, str(tmp_path / "empty"))
    saved = write_fixture("pope", tmp_path, "save_to_disk")  # a DatasetDict with split 'test' only
    with pytest.raises(HfpruneError, match="has no split 'validation' \\(splits: test\\)"):
        load_samples(spec, str(saved))


def test_offline_hub_load_says_how_to_get_a_local_copy():
    with pytest.raises(HfpruneError) as error:
        load_samples(load_spec("pope"), limit=1)
    message = str(error.value)
    assert "cannot load lmms-lab/POPE split 'test' from the Hugging Face Hub" in message
    assert "hf download lmms-lab/POPE --repo-type dataset --local-dir DIR" in message
