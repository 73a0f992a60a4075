"""``fit(compile=True)`` trains the same model as eager mode.

torch.compile reuses a compiled forward for any network of the same structure, and by default
does not check the modules' forward hooks (``skip_nnmodule_hook_guards``). The engine swaps
BatchNorm statistics per domain through hooks (``domain_bn="separate"``, DSBN), so a compiled
run that followed another compiled run in the same process (a notebook) silently lost them.
The dynamo ``eager`` backend checks the same tracing and guards as inductor, without a C++
compile.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import tlkit


@pytest.mark.parametrize("adapt", ["dann", ["dsbn", "dann"]])
def test_a_compiled_run_after_another_keeps_its_batchnorm_hooks(
    tiny_task, fast, monkeypatch, adapt
):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    opts = {**fast, "epochs": 2}
    eager = tlkit.fit(tiny_task, adapt=adapt, **opts).history
    tlkit.fit(tiny_task, compile=True, **opts)  # source-only, compiled first
    compiled = tlkit.fit(tiny_task, adapt=adapt, compile=True, **opts).history
    for name in ("source_accuracy", "target_accuracy", "train_loss"):
        assert [row[name] for row in compiled] == pytest.approx(
            [row[name] for row in eager], abs=1e-4
        ), name


def test_a_torch_without_the_hook_guard_setting_is_warned_about(monkeypatch):
    from types import SimpleNamespace

    from tlkit.engine.device import compile_hook_guards

    monkeypatch.setattr(torch, "_dynamo", SimpleNamespace(config=SimpleNamespace()))
    with pytest.warns(UserWarning, match="skip_nnmodule_hook_guards"):
        compile_hook_guards(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning without compile
        compile_hook_guards(False)
