"""Strategy modules with optimisers of their own settings (a GAN's generator and discriminator):
their own rate and Adam betas, discriminator steps per generator step, exact resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tlkit
from tlkit.engine.trainer import Trainer as EngineTrainer

G_SETTINGS = tlkit.OwnOptimizer(lr=0.02, betas=(0.5, 0.9), loss="main")
D_SETTINGS = tlkit.OwnOptimizer(lr=0.005, betas=(0.5, 0.999), steps=3)


class Gain(nn.Module):
    """A one-parameter 'generator': images times a learnt gain."""

    own_optimizer = G_SETTINGS

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.8))


class Critic(nn.Module):
    own_optimizer = D_SETTINGS

    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, 1)


class OwnGAN:
    """Generator trained on the main loss by its own Adam; critic on its own, 3 steps per step."""

    name, family, needs_target = "test_own_gan", "adapt", True

    def __init__(self):
        self.calls = {}  # step index -> how many times the adversary hook ran

    @tlkit.hookimpl
    def tlkit_setup(self, trainer):
        self.modules = nn.ModuleDict(
            {"g": Gain(), "d": Critic(trainer.model.backbone.num_features)}
        )
        return self.modules

    @tlkit.hookimpl
    def tlkit_transform_source(self, step):
        return (step.x * self.modules["g"].gain).clamp(0, 1)

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step):
        return {"fool": -self.modules["d"].fc(step.features.float()).mean() * 0.01}

    @tlkit.hookimpl
    def tlkit_adversary_losses(self, step):
        self.calls[step.index] = self.calls.get(step.index, 0) + 1
        d = self.modules["d"].fc
        real = d(step.target_features.detach().float())
        fake = d(step.features.detach().float())
        bce = nn.functional.binary_cross_entropy_with_logits
        return {"critic": bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))}


def _opts(fast, **more):
    return dict(epochs=2, mode="full", adapt="test_own_gan", **fast, **more)


def test_modules_get_their_own_rate_betas_and_steps(tiny_task, fast, temp_strategy):
    temp_strategy(OwnGAN)
    seen = []

    class Inspect:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            gan = trainer.strategies["test_own_gan"]
            owned = {o.name: o for o in trainer.optimisation.owned}
            main = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
            g_opt = owned["test_own_gan.g"].optimizer
            d_opt = owned["test_own_gan.d"].optimizer
            seen.append(
                {
                    "in_main": any(id(p) in main for p in gan.modules.parameters()),
                    "g": (g_opt.param_groups[0]["lr"], g_opt.param_groups[0]["betas"]),
                    "d": (d_opt.param_groups[0]["lr"], d_opt.param_groups[0]["betas"]),
                    "g_steps": int(g_opt.state[gan.modules["g"].gain]["step"]),
                    "d_steps": int(d_opt.state[gan.modules["d"].fc.weight]["step"]),
                    "gain": float(gan.modules["g"].gain.detach()),
                    "adversary": trainer.adversary_optimizer,
                }
            )

    trainer = tlkit.Trainer(tiny_task, observers=[Inspect()], **_opts(fast))
    run = trainer.fit()
    gan = trainer.strategies["test_own_gan"]
    n = len(seen)
    assert n == run.history[-1]["step"] and n > 2
    assert not any(s["in_main"] for s in seen)
    # constant rates (no schedule), the declared betas
    assert {s["g"] for s in seen} == {(0.02, (0.5, 0.9))}
    assert {s["d"] for s in seen} == {(0.005, (0.5, 0.999))}
    # one generator step per training step, three critic steps (the hook asked three times)
    assert [s["g_steps"] for s in seen] == list(range(1, n + 1))
    assert [s["d_steps"] for s in seen] == [3 * k for k in range(1, n + 1)]
    assert set(gan.calls.values()) == {3}
    assert seen[-1]["gain"] != 0.8 and seen[0]["adversary"] is None
    # the main optimiser's rate follows the run's schedule, the modules' do not
    assert run.history[-1]["lr"] != 0.02 and "critic" in run.history[-1]


def test_own_optimisers_resume_exactly(tiny_task, fast, temp_strategy, tmp_path):
    temp_strategy(OwnGAN)
    whole = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "a"), **_opts(fast))
    tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), max_steps=5, **_opts(fast))
    killed = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert set(killed["own_optimizers"]) == {"test_own_gan.g", "test_own_gan.d"}
    assert killed["own_optimizers"]["test_own_gan.d"]["state"]  # the critic's moments are kept
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path / "b"), resume=True, **_opts(fast))
    assert resumed.history == whole.history
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["own_optimizers"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["own_optimizers"]
    for name in a:
        for key, state in a[name]["state"].items():
            for k, v in state.items():
                assert torch.equal(v, b[name]["state"][key][k]), (name, key, k)
    wa, wb = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_dict_declaration_works_like_the_class(tiny_task, fast, temp_strategy):
    class DictCritic(Critic):
        own_optimizer = {"lr": 0.005, "betas": (0.5, 0.999), "steps": 3}

    class DictGAN(OwnGAN):
        name = "test_dict_gan"

        @tlkit.hookimpl
        def tlkit_setup(self, trainer):
            self.modules = nn.ModuleDict(
                {"g": Gain(), "d": DictCritic(trainer.model.backbone.num_features)}
            )
            return self.modules

    temp_strategy(DictGAN)
    trainer = EngineTrainer(tiny_task, epochs=1, mode="full", adapt="test_dict_gan", **fast)
    trainer.train()
    owned = {o.name: o.settings for o in trainer.optimisation.owned}
    assert owned["test_dict_gan.d"] == D_SETTINGS


@pytest.mark.parametrize(
    "declaration, message",
    [
        ({"lr": -1.0}, r"module 'test_bad_own\.d'.*lr must be a number > 0, got -1\.0"),
        ({"betas": (0.5,)}, r"betas must be two numbers in \[0, 1\)"),
        ({"loss": "main", "steps": 2}, r"steps > 1 needs loss='adversary'"),
        ({"lrate": 0.1}, r"own_optimizer=\{'lrate': 0\.1\} is not valid"),
        ("adam", r"own_optimizer must be True, a tlkit\.OwnOptimizer\(lr=\.\.\., betas=\.\.\.\)"),
    ],
    ids=["negative-lr", "one-beta", "main-steps", "unknown-field", "a-string"],
)
def test_bad_declarations_are_explained(tiny_task, fast, temp_strategy, declaration, message):
    class BadCritic(Critic):
        own_optimizer = declaration

    class Bad(OwnGAN):
        name = "test_bad_own"

        @tlkit.hookimpl
        def tlkit_setup(self, trainer):
            self.modules = nn.ModuleDict({"d": BadCritic(trainer.model.backbone.num_features)})
            return self.modules

    temp_strategy(Bad)
    with pytest.raises(tlkit.PluginError, match=r"strategy 'test_bad_own'.*" + message):
        tlkit.fit(tiny_task, epochs=1, mode="full", adapt="test_bad_own", max_steps=1, **fast)


def test_settings_are_checked_where_they_are_written():
    with pytest.raises(ValueError, match=r"OwnOptimizer: steps must be an integer >= 1, got 0"):
        tlkit.OwnOptimizer(steps=0)
    with pytest.raises(ValueError, match=r"OwnOptimizer: loss must be 'adversary' or 'main'"):
        tlkit.OwnOptimizer(loss="generator")


def test_an_adversary_hook_needs_a_module_trained_on_it(tiny_task, fast, temp_strategy):
    class MainOnly(OwnGAN):
        name = "test_main_only"

        @tlkit.hookimpl
        def tlkit_setup(self, trainer):
            self.modules = nn.ModuleDict({"g": Gain()})
            return self.modules

    temp_strategy(MainOnly)
    with pytest.raises(tlkit.PluginError, match="no module marked own_optimizer"):
        tlkit.fit(tiny_task, epochs=1, mode="full", adapt="test_main_only", max_steps=1, **fast)
