"""Glue helpers: what a notebook hands to the book."""

from vqpaper import book


def test_glue_means_glues_one_key_per_group_and_metric(monkeypatch):
    glued = {}
    monkeypatch.setattr(book, "_glue", lambda name, value: glued.__setitem__(name, value))
    summary = {"16/scratch": {"mse": {"mean": 0.01234, "std": None, "per_seed": [0.01234]},
                              "perplexity": {"mean": 1234.5, "std": None, "per_seed": [1234.5]}}}
    book.glue_means("tcc", summary, {"mse": ".3f", "perplexity": ",.0f"})
    assert glued == {"tcc.16.scratch.mse": "0.012", "tcc.16.scratch.perplexity": "1,234"}
