"""The domain-adaptation benchmark's runs file: a finished run is not repeated, unless the code
of its strategy changed since it was measured."""

from __future__ import annotations

from benchmarks import domain_adaptation as da  # the repository root is on sys.path


def test_runs_are_reused_until_their_strategy_code_changes(tmp_path, monkeypatch):
    calls = []

    def fake_run(method, pair, seed, budget, quick):
        calls.append((method.name, seed))
        return {"last": 0.5, "best": 0.5, "seconds": 0.0, "steps": 1, "curve": [0.5]}

    monkeypatch.setattr(da, "run_one", fake_run)
    cache = tmp_path / "runs.jsonl"
    methods = [da.Method("bnm", "bnm", budgets=(1,))]
    args = (methods, {p: (0,) for p in da.PAIRS}, ("digits->digits-m",), (1,))
    da.sweep(*args, quick=True, cache=cache)
    assert calls == [("bnm", 0)]
    assert da.code_fingerprint("bnm") in cache.read_text()  # recorded beside the result
    da.sweep(*args, quick=True, cache=cache)
    assert len(calls) == 1  # found in the file
    monkeypatch.setattr(da, "code_fingerprint", lambda adapt: "changed")
    results = da.sweep(*args, quick=True, cache=cache)
    assert len(calls) == 2  # measured again with the new code
    assert results[("digits->digits-m", "bnm", 1)][0]["last"] == 0.5
    da.sweep(*args, quick=True, cache=cache)
    assert len(calls) == 2  # and the new line is found next time


def test_the_fingerprint_follows_the_strategy_source():
    assert da.code_fingerprint(None) is None
    assert da.code_fingerprint("bnm") == da.code_fingerprint("bnm")
    assert da.code_fingerprint("bnm") != da.code_fingerprint("shot")
    assert da.code_fingerprint(["fda", "bnm"]) != da.code_fingerprint("bnm")


def test_docstrings_and_comments_do_not_change_the_fingerprint():
    """A strategy's documentation can be edited without re-measuring every run that used it;
    a change to what the code does is seen."""
    code = 'def loss(x, t=2.5):\n    """Doc."""\n    return x / t  # scale\n'
    same = 'def loss(x, t=2.5):\n    """Better doc,\n    two lines."""\n    return x / t\n'
    changed = 'def loss(x, t=3.0):\n    """Doc."""\n    return x / t  # scale\n'
    assert da.source_fingerprint(code) == da.source_fingerprint(same)
    assert da.source_fingerprint(code) != da.source_fingerprint(changed)
    assert da.source_fingerprint('"""Module doc."""\nX = 1\n') == da.source_fingerprint("X = 1\n")


def test_the_fingerprint_lists_only_non_empty_fields():
    """Python 3.12 added ``type_params=[]`` to every def and 3.13 leaves empty fields out of
    ``ast.dump``: the canonical form has no empty field, so versions agree."""
    text = da.source_fingerprint("def f(x):\n    return x\n")
    assert "type_params" not in text and "decorator_list" not in text
    assert "FunctionDef(name='f'" in text
