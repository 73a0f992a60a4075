"""``%tlkit`` through IPython's test shell, the rich display of runs, and an executed notebook.

The magics run in ``IPython.testing.globalipapp``'s shell (no kernel); the last test executes a
small notebook in a real kernel with nbclient -- as nbval and the book build do -- and checks that
the live curves of ``%tlkit fit`` end up as exactly one plain image: the final state.
"""

from __future__ import annotations

import nbclient
import nbformat
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import tlkit
from tlkit.notebook.display import run_html
from tlkit.notebook.magics import build_parser, fit_options

FAST = "--backbone small_cnn --batch-size 16 --lr 0.003 --quiet"


@pytest.fixture(scope="module")
def ip():
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()  # starts the test shell once per process
    shell.run_line_magic("load_ext", "tlkit")
    types = shell.display_formatter.active_types
    shell.display_formatter.active_types = [*types, "text/html", "image/png"]
    yield shell
    shell.display_formatter.active_types = types


def test_strategies_magic_lists_installed_strategies_as_a_table(ip):
    table = ip.run_line_magic("tlkit", "strategies")
    names = {s.name for s in table}
    assert {"cross_entropy", "mse"} <= names
    html = ip.display_formatter.format(table)[0]["text/html"]
    assert "<table>" in html and "cross_entropy" in html
    losses = ip.run_line_magic("tlkit", "strategies loss")
    assert losses and {s.family for s in losses} == {"loss"}


def test_fit_magic_trains_shows_live_curves_and_stores_the_run(ip, tiny_task):
    ip.user_ns["tiny"] = tiny_task
    with capture_output() as captured:
        result = ip.run_cell(f"%tlkit fit --data tiny --epochs 2 {FAST} --as r")
    assert result.success, result.error_in_exec
    run = ip.user_ns["r"]
    assert isinstance(run, tlkit.Run) and len(run.history) == 2
    assert result.result is run
    pngs = [o for o in captured.outputs if "image/png" in o.data]
    assert pngs, "the live curves were not displayed"
    # the extension shows a Run with its curves
    html = ip.display_formatter.format(run)[0]["text/html"]
    assert "tlkit run" in html and "data:image/png;base64," in html


def test_fit_magic_passes_strategies_and_extra_options():
    args = build_parser().parse_args(
        ["fit", "--data", "synth-digits->digits", "--adapt", "dann,coral", "--adapt", "mcc"]
        + ["--pseudo-label", "threshold", "--set", "max_steps=3", "--set", "monitor=train_loss"]
    )
    opts = fit_options(args)
    assert opts["adapt"] == ["dann", "coral", "mcc"] and opts["pseudo_label"] == "threshold"
    assert opts["max_steps"] == 3 and opts["monitor"] == "train_loss"
    assert args.data == "synth-digits->digits" and args.epochs == 5


@pytest.mark.parametrize(
    "line, words",
    [
        ("", "usage"),
        ("fit --epochs 2", "--data"),
        ("nonsense", "invalid choice"),
        ("fit --data tiny --adapt no_such_method " + FAST, "unknown adapt strategy"),
        ("fit --data tiny --set lr=-1 " + FAST, "lr=-1"),
        ("fit --data no_such_data " + FAST, "unknown dataset"),
        ("fit --data tiny --set nope " + FAST, "KEY=VALUE"),
        ("dashboard --dataset nosuch", "not offered"),
    ],
)
def test_mistakes_are_usage_errors_with_a_message(ip, tiny_task, line, words):
    ip.user_ns["tiny"] = tiny_task
    with pytest.raises(UsageError, match=words):
        ip.run_line_magic("tlkit", line)


def test_other_subcommands(ip, tiny_task, temp_strategy):
    assert "digits" in ip.run_line_magic("tlkit", "datasets")
    assert "small_cnn" in ip.run_line_magic("tlkit", "backbones")
    dash = ip.run_line_magic("tlkit", "dashboard --dataset digits")
    assert dash.dataset.value == "digits" and dash.backbone.value == "small_cnn"
    with capture_output() as shown:
        ip.display_formatter.format(dash)  # the widget, then its per-epoch table below it
    assert "application/vnd.jupyter.widget-view+json" in shown.outputs[0].data
    assert "tlkit-epochs" in shown.outputs[1].data["text/html"]
    if "random" not in {s.name for s in tlkit.strategies("query")}:  # entry point not declared
        from tlkit_strategies.query.random_query import RandomQuery

        temp_strategy(RandomQuery)
    ip.user_ns["tiny"] = tiny_task
    ui = ip.run_line_magic("tlkit", "annotate --data tiny -k 2 --query random")
    assert ui.learner.query_name == "random" and ui.learner.num_labelled == 8
    assert len(ui.learner.pool) == len(tiny_task.target)


def test_run_html_embeds_the_curves_and_survives_an_empty_history(tiny_task, fast):
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    html = run_html(run)
    assert "<table>" in html and "<img" in html and "source_accuracy" in html
    empty = tlkit.Run(run.model, run.config)
    assert "<img" not in run_html(empty) and "<table>" in run_html(empty)


def test_executed_notebook_keeps_the_final_curves_as_one_image(tmp_path):
    setup = (
        "%load_ext tlkit\n"
        "import torch, tlkit\n"
        "torch.set_num_threads(1)\n"
        "full = tlkit.datasets.load('digits')\n"
        "small = tlkit.datasets.DomainPair(full.source.subset(range(64)), "
        "full.source_test.subset(range(40)), name='small')"
    )
    fit = "%tlkit fit --data small --epochs 3 --image-size 16 " + FAST
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(fit)]
    )
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[1].outputs
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1, [o.output_type for o in outputs]
    result = [o for o in outputs if o.output_type == "execute_result"]
    assert result and "data:image/png;base64," in result[0].data["text/html"]


def test_fit_lr_takes_a_number_or_find_and_names_a_typo():
    parser = build_parser()
    assert parser.parse_args(["fit", "--data", "digits", "--lr", "find"]).lr == "find"
    assert parser.parse_args(["fit", "--data", "digits", "--lr", "3e-4"]).lr == pytest.approx(3e-4)
    with pytest.raises(UsageError, match="expected a number or 'find', got 'abc'"):
        parser.parse_args(["fit", "--data", "digits", "--lr", "abc"])
