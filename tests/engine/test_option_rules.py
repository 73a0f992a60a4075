"""Each rule about options is written once and every entry point goes through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tlkit
from tlkit.confident_learning import find_label_issues
from tlkit.cross_validation import cross_validated_suspicious_labels
from tlkit.label_issues import SuspiciousLabels, suspicious_labels

PACKAGE = Path(tlkit.__file__).parent


def places(text: str) -> list[str]:
    """The package's files (relative) that contain ``text``."""
    return sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if text in p.read_text()
    )


def test_each_rule_has_one_home():
    assert places("unknown fit() options") == ["engine/config.py"]
    assert places("from unlabelled target data, but task") == ["engine/rules.py"]
    assert places("not in RANK_BY") == ["confident_learning.py"]
    assert places("not in METHODS:") == ["confident_learning.py", "engine/lr_finder.py"]
    assert places("def check_form") == ["notebook/dashboard.py"]  # it calls engine/rules
    assert places('"shared", "separate"') == ["options.py"]  # domain_bn's values


P = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
Y = torch.tensor([0, 1, 1, 0])


def message(call) -> str:
    with pytest.raises(ValueError) as err:
        call()
    return str(err.value)


def test_rank_by_and_method_give_one_message_everywhere(tiny_task):
    bad_rank = [
        lambda: find_label_issues(P, Y, rank_by="loss"),
        lambda: SuspiciousLabels.from_probabilities(P, Y, rank_by="loss"),
        lambda: cross_validated_suspicious_labels(tiny_task.source, rank_by="loss"),
    ]
    texts = {message(c) for c in bad_rank}
    assert texts == {"unknown rank_by 'loss'; use one of ['normalized_margin', 'self_confidence']."}
    bad_method = [
        lambda: SuspiciousLabels.from_probabilities(P, Y, method="vote"),
        lambda: suspicious_labels(object(), tiny_task.source, method="vote"),
    ]
    texts = {message(c) for c in bad_method}
    assert texts == {"unknown method 'vote'; use one of ['confident_learning', 'small_loss']."}
