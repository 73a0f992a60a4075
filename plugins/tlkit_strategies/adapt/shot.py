r"""SHOT: information maximisation on the target, with self-supervised pseudo-labels.

Liang, Hu & Feng, "Do We Really Need to Access the Source Data? Source Hypothesis Transfer for
Unsupervised Domain Adaptation", ICML 2020.

SHOT keeps the source classifier (the *hypothesis*) and trains the feature extractor so that the
target predictions :math:`p_i = \mathrm{softmax}(z_i) \in \mathbb{R}^K` of a target batch of
:math:`B` samples are individually confident and globally diverse (information maximisation):

.. math::
    \mathcal{L}_{ent} = -\frac{1}{B}\sum_{i=1}^{B}\sum_{k=1}^{K} p_{ik}\log p_{ik}, \qquad
    \mathcal{L}_{div} = \sum_{k=1}^{K} \bar p_k \log \bar p_k, \quad
    \bar p = \frac{1}{B}\sum_i p_i,

.. math::
    \mathcal{L}_{IM} = \mathcal{L}_{ent} + \mathcal{L}_{div}

(:math:`\mathcal{L}_{div} = -H(\bar p)`: minimising it spreads the batch over the classes, which
stops the collapse entropy minimisation alone runs into). SHOT adds self-supervised
pseudo-labels: once per epoch, the features :math:`f_i` of every target training sample
(L2-normalised, with a constant 1 appended as in the authors' code) give class centroids
weighted by the predictions, each sample takes the class of its nearest centroid in cosine
distance, and the centroids are recomputed once from these hard labels:

.. math::
    c_k^{(0)} = \frac{\sum_i p_{ik} f_i}{\sum_i p_{ik}}, \qquad
    \hat y_i = \arg\min_k d_{\cos}(f_i, c_k), \qquad
    c_k^{(1)} = \frac{\sum_i \mathbb{1}[\hat y_i = k] f_i}{\sum_i \mathbb{1}[\hat y_i = k]}

(only over the classes the model predicts for at least one sample). The objective is

.. math::
    \mathcal{L}_{shot} = w_{im}\,(\mathcal{L}_{ent} + w_{div}\,\mathcal{L}_{div})
      + \beta\, \frac{1}{B}\sum_i \mathrm{CE}(z_i, \hat y_i),

with :math:`w_{im} = w_{div} = 1` and :math:`\beta = 0.3` in the paper's digit experiments.

**Source-free use** (``source_free = True``): SHOT needs no source data. Given a model trained on
the source, ``tlkit.fit(target, model=source_run.model, adapt="shot", source_free=True)`` adapts
it with unlabelled target data only (every step's source batch is empty and the supervised loss
is not called). There, as in the paper, the classifier head is frozen (``freeze_head="auto"``),
only the backbone learns, so that the source hypothesis is kept, and the pseudo-labels are on
(``pseudo_label="auto"`` is :math:`\beta = 0.3`). The paper's source model also has a
weight-normalised classifier after a BatchNorm bottleneck, trained with label smoothing; tlkit's
model is ``backbone -> linear head``.

**With source data** (the ordinary mode, the model trained from scratch alongside): the head
keeps training on the labelled source batch, SHOT waits for the first ``warmup`` of training
(``"auto"``: an eighth) so that the classes are learnt before the target is clustered around
them -- from the first step, a random network's clusters were matched to the wrong classes
(synth-digits->digits, seed 0: 67.7% without the wait, 84.7% with it) -- and the pseudo-labels
are off (``"auto"``): labels clustered from a half-trained model are often wrong, and in
``benchmarks/domain_adaptation.py --study`` they cost accuracy (see its results file).

Shapes: target logits ``(B, K)``, target features ``(B, D)``; pseudo-labels of the whole target
``(N_t,)`` from features ``(N_t, D + 1)`` and centroids ``(K, D + 1)``. Logged: ``shot`` (the
weighted objective), and the diagnostics ``shot_entropy``, ``shot_diversity`` (:math:`H(\bar
p)` of the batch) and, through the engine, ``pseudo_label_accuracy``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import domain_context, options
from tlkit.strategy_tools import prediction_entropy


def information_maximization(
    logits: torch.Tensor, diversity_weight: float = 1.0, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(L_ent + w_div * L_div, L_ent, H(mean p))`` for target ``logits`` ``(B, K)``.

    ``eps`` is added inside the log of the mean prediction, as in the authors' code."""
    probs = logits.float().softmax(1)
    entropy = prediction_entropy(logits, probs=probs).mean()
    diversity = prediction_entropy(probs=probs.mean(0), eps=eps)  # H(mean p) >= 0; L_div = -H
    return entropy - diversity_weight * diversity, entropy, diversity


def cluster_pseudo_labels(
    features: torch.Tensor, logits: torch.Tensor, rounds: int = 1
) -> torch.Tensor:
    """SHOT's pseudo-labels ``(N,)`` int64 from ``features`` ``(N, D)`` and ``logits`` ``(N, K)``.

    Features get a constant 1 appended and are L2-normalised; centroids are the
    prediction-weighted means, then ``rounds`` times the means of the current hard labels; every
    sample takes its nearest centroid in cosine distance among the classes predicted (argmax) at
    least once.
    """
    f = torch.cat([features.float(), torch.ones(len(features), 1, device=features.device)], 1)
    f = F.normalize(f, dim=1)
    probs = logits.float().softmax(1)
    present = torch.bincount(probs.argmax(1), minlength=probs.shape[1]) > 0
    weights = probs
    labels = probs.argmax(1)
    for _ in range(rounds + 1):
        centroids = weights.T @ f / (weights.sum(0)[:, None] + 1e-8)  # (K, D + 1)
        similarity = f @ F.normalize(centroids, dim=1).T  # cosine similarity (N, K)
        similarity[:, ~present] = -float("inf")
        labels = similarity.argmax(1)
        weights = F.one_hot(labels, probs.shape[1]).float()
    return labels


def _target_batches(trainer):
    """``(inputs, indices)`` batches of the whole unlabelled target: an in-memory tensor is
    sliced as it is; files are decoded by the run's DataLoader with the evaluation transform."""
    target = trainer.target
    if not target.in_memory:
        yield from trainer.target_batches()
        return
    inputs, batch = target.inputs, trainer.config.eval_batch_size
    for start in range(0, len(inputs), batch):
        yield inputs[start : start + batch], torch.arange(start, min(len(inputs), start + batch))


#: The fraction of training before SHOT starts when it trains with source data (``warmup``).
AUTO_WARMUP = 0.125
#: The weight of the pseudo-label loss in the paper (``pseudo_label`` in source-free runs).
PAPER_PSEUDO_LABEL = 0.3


class SHOT:
    """SHOT (Liang et al. 2020): information maximisation and clustered pseudo-labels on target.

    Args:
        trade_off: weight ``w_im`` of the information-maximisation term (> 0).
        diversity: weight ``w_div`` of the diversity term inside it (>= 0; 0 leaves plain
            entropy minimisation).
        pseudo_label: weight ``beta`` of the cross-entropy on the clustered pseudo-labels (>= 0;
            0 turns them off: SHOT-IM); ``"auto"``: the paper's 0.3 in source-free runs, 0 when
            training with source data (see the module docstring for why).
        freeze_head: keep the classifier head fixed; ``"auto"`` freezes it in source-free runs
            only (the paper's hypothesis transfer).
        warmup: fraction of training (``step.progress``) before SHOT's terms start, so that the
            model has learnt the source classes first; ``"auto"``: 0 in source-free runs (the
            model is trained already), 0.125 otherwise (one epoch in eight).
    """

    name = "shot"
    family = "adapt"
    needs_target = True  # trains on the unlabelled target batch
    requires_task = "classification"
    source_free = True  # adapts a source model with unlabelled target data alone

    def __init__(
        self,
        trade_off: float = 1.0,
        diversity: float = 1.0,
        pseudo_label: float | str = "auto",
        freeze_head: bool | str = "auto",
        warmup: float | str = "auto",
    ) -> None:
        self.trade_off = options.positive("trade_off", trade_off)
        self.diversity = options.non_negative("diversity", diversity)
        self.pseudo_label = (
            "auto" if pseudo_label == "auto" else options.non_negative("pseudo_label", pseudo_label)
        )
        self.freeze_head = (
            "auto" if freeze_head == "auto" else options.boolean("freeze_head", freeze_head)
        )
        self.warmup = "auto" if warmup == "auto" else options.fraction("warmup", warmup)
        self.labels: torch.Tensor | None = None  # pseudo-labels of the whole target (N_t,)
        self.labels_epoch = 0  # the epoch they were computed for
        self._frozen: list[torch.nn.Parameter] = []

    def state_dict(self) -> dict:
        """The pseudo-labels of the current epoch (a resumed run goes on with the same ones)."""
        return {"labels": self.labels, "labels_epoch": self.labels_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.labels, self.labels_epoch = state["labels"], int(state["labels_epoch"])

    # -- set-up ----------------------------------------------------------------------------
    @tlkit.hookimpl
    def tlkit_setup(self, trainer) -> None:
        source_free = bool(getattr(trainer.config, "source_free", False))
        if self.warmup == "auto":
            self.warmup = 0.0 if source_free else AUTO_WARMUP
        if self.pseudo_label == "auto":
            self.pseudo_label = PAPER_PSEUDO_LABEL if source_free else 0.0
        freeze = source_free if self.freeze_head == "auto" else self.freeze_head
        if freeze:
            self._frozen = [p for p in trainer.model.head.parameters() if p.requires_grad]
            for p in self._frozen:
                p.requires_grad_(False)

    @tlkit.hookimpl
    def tlkit_on_fit_end(self) -> None:
        for p in self._frozen:  # hand the model back as it came
            p.requires_grad_(True)
        self._frozen = []

    # -- pseudo-labels ---------------------------------------------------------------------
    @torch.no_grad()
    def _label_target(self, trainer) -> torch.Tensor:
        """Cluster pseudo-labels of every target training sample with the current model: the
        target as the run reads it for evaluation (in memory, or decoded from files). A file
        that cannot be read keeps the label ``-1``; it never reaches a training batch."""
        model = trainer.model
        modes = {m: m.training for m in model.modules()}
        feats, logits, seen = [], [], []
        try:
            model.eval()
            with trainer.autocast(), domain_context("target"):
                for x, idx in _target_batches(trainer):
                    if not len(idx):
                        continue
                    f = model.backbone(model.prepare(x.to(trainer.device)))
                    feats.append(f.float())
                    logits.append(model.head(f).float())
                    seen.append(idx.cpu())
        finally:
            for m, mode in modes.items():
                m.train(mode)
        labels = torch.full((len(trainer.target),), -1, dtype=torch.long)
        if seen:
            found = cluster_pseudo_labels(torch.cat(feats), torch.cat(logits))
            labels[torch.cat(seen)] = found.cpu()
        return labels

    # -- the loss --------------------------------------------------------------------------
    @tlkit.hookimpl
    def tlkit_extra_losses(self, step) -> dict[str, torch.Tensor] | None:
        if step.progress < self.warmup:
            return {"shot": step.target_logits.float().sum() * 0.0}
        im, entropy, diversity = information_maximization(step.target_logits, self.diversity)
        loss = self.trade_off * im
        step.log("shot_entropy", entropy.detach())
        step.log("shot_diversity", diversity.detach())
        if self.pseudo_label > 0:
            if self.labels is None or self.labels_epoch != step.epoch:
                self.labels = self._label_target(step.trainer).cpu()
                self.labels_epoch = step.epoch
            index = step.target_indices.cpu()
            targets = self.labels[index].to(step.target_logits.device)
            step.log_target_predictions(targets)
            ce = F.cross_entropy(step.target_logits.float(), targets)
            loss = loss + self.pseudo_label * ce
        return {"shot": loss}
