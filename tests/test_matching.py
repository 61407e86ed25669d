import json

import pytest
import torch
from safetensors.torch import load_file

from genprior.data import load_dataset
from genprior.errors import GenpriorError, UnknownNameError
from genprior.matching import MATCHERS, create_matcher, list_matchers, load_experts, train_experts

from conftest import subset

SMALL = {"net_options": {"width": 16}}
PER_CLASS = ("dm", "mmd", "wasserstein", "dc")


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    """The nets here are tiny: one thread never waits on a busy second core, and is as fast alone."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return subset(load_dataset("digits", "train"), 20)


@pytest.fixture(scope="module")
def real_batch(digits):
    return digits.images_of_class(3)[:12]


@pytest.fixture(scope="module")
def buffer(digits, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("experts")
    train_experts(digits, "convnet", num_experts=2, epochs=2, out_dir=out, batch=64, net_options={"width": 16},
                  progress=False)
    return out


def started(name, seed=0, **options):
    m = create_matcher(name, 1, 10, 28, "digits", **{**SMALL, **options})
    torch.manual_seed(seed)
    m.start_iteration(0, torch.Generator().manual_seed(seed))
    return m


def descend(loss_fn, syn, steps=5, lr=0.05):
    """Loss before and after ``steps`` Adam steps, each with the same random draws."""
    syn = syn.clone().requires_grad_(True)
    opt = torch.optim.Adam([syn], lr=lr)
    losses = []
    for step in range(steps + 1):
        loss = loss_fn(syn, torch.Generator().manual_seed(7))
        losses.append(loss.item())
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert torch.isfinite(syn.grad).all() and syn.grad.abs().sum() > 0
        opt.step()
    return losses


def test_registry_lists_every_matcher():
    assert list_matchers() == ["cafe", "dc", "dm", "mmd", "mtt", "wasserstein"]
    assert all(entry.info["paper"] for entry in MATCHERS)


@pytest.mark.parametrize("name", PER_CLASS)
def test_per_class_loss_decreases_and_reaches_the_images(name, real_batch):
    m = started(name, dsa=False)
    syn = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    losses = descend(lambda s, g: m.class_loss(real_batch, s, 3, g), syn)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name,dsa", [("dm", True), ("dm", False), ("mmd", True), ("wasserstein", True), ("dc", False)])
def test_loss_vanishes_when_the_sets_coincide(name, dsa, real_batch):
    m = started(name, dsa=dsa)
    same = m.class_loss(real_batch, real_batch.clone(), 3, torch.Generator().manual_seed(3)).item()
    other = m.class_loss(real_batch, real_batch.flip(-1), 3, torch.Generator().manual_seed(3)).item()
    if name == "dc":  # the reference's 1e-6 in the cosine denominator leaves a small floor
        assert same < 1e-3 * other
    else:
        assert same == pytest.approx(0.0, abs=1e-6) and other > 1e-3


def test_cafe_loss_decreases_and_feature_terms_vanish_on_the_real_batch(digits):
    m = started("cafe", dsa=False, batch_real=8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    syn = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    losses = descend(lambda s, g: m.set_loss(s, labels, digits, g), syn)
    assert losses[-1] < losses[0]

    exact = subset(digits, 8)  # sample_class returns these 8 images per class, reordered
    images = torch.cat([exact.images_of_class(c) for c in range(3)])
    parts = m.terms(images, torch.arange(3).repeat_interleave(8), exact, torch.Generator().manual_seed(0))
    assert parts["feature"].item() == pytest.approx(0.0, abs=1e-5)
    assert parts["output"].item() == pytest.approx(0.0, abs=1e-5)
    assert parts["discrimination"].item() > 0


def test_mtt_loss_decreases_and_trains_the_step_size(buffer):
    m = started("mtt", buffer=buffer, syn_steps=3, expert_epochs=1, max_start_epoch=2, dsa=False)
    labels = torch.arange(10)
    syn = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    losses = descend(lambda s, g: m.set_loss(s, labels, None, g), syn, lr=0.1)
    assert losses[-1] < losses[0]
    assert m.extra_parameters()[0].grad is not None and m.extra_parameters()[0].grad.abs() > 0
    assert m.extra_lr == m.describe()["lr_lr"]
    state = m.state_dict()
    m.load_state_dict({"syn_lr": state["syn_lr"] * 2})
    assert m.extra_parameters()[0].item() == pytest.approx(2 * state["syn_lr"].item())
    assert m.describe()["learned_syn_lr"] == pytest.approx(2 * state["syn_lr"].item())  # recorded in the set's meta


def run_iteration(m, digits, syn, labels, seed):
    """One loop iteration as the distillation loop drives it, with plain SGD on pixels."""
    syn = syn.clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m.start_iteration(0, g)
    losses = []
    for _ in range(m.updates_per_iteration):
        opt.zero_grad()
        if m.per_class:
            for c in labels.unique().tolist():
                loss = m.class_loss(digits.sample_class(c, m.batch_real, g), syn[labels == c], c, g)
                loss.backward()
                losses.append(loss.item())
        else:
            loss = m.set_loss(syn, labels, digits, g)
            loss.backward()
            losses.append(loss.item())
        opt.step()
        m.after_update(syn.detach(), labels, g)
    return losses


@pytest.mark.parametrize("name", ["dm", "dc", "mtt"])
def test_same_seeds_give_identical_losses(name, digits, buffer):
    options = {"ipc": 1, "batch_real": 8}
    if name == "dc":
        options.update(outer_loop=2, inner_loop=2)
    if name == "mtt":
        options.update(buffer=buffer, syn_steps=2, expert_epochs=1, max_start_epoch=2)
    labels = torch.arange(10) if name == "mtt" else torch.tensor([0, 1])
    syn = torch.randn(len(labels), 1, 28, 28, generator=torch.Generator().manual_seed(1))
    runs = [run_iteration(create_matcher(name, 1, 10, 28, "digits", **SMALL, **options), digits, syn, labels, 5)
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert len(runs[0]) == (4 if name == "dc" else 1 if name == "mtt" else 2)


def test_describe_resolves_the_paper_schedules(buffer):
    dc = create_matcher("dc", 1, 10, 28, "mnist5k", ipc=10, **SMALL).describe()
    assert (dc["outer_loop"], dc["inner_loop"], dc["lr_net"], dc["dsa_strategy"]) == (10, 50, 0.01, "color_crop_cutout_scale_rotate")
    # the reference's f1..f4 on ConvNet-3: pre-pool maps of blocks 1-3, then the last pooled map
    assert create_matcher("cafe", 1, 10, 28, "digits", ipc=50, **SMALL).describe()["layer_weights"] == [0.1, 0.1, 1.0, 1.0]
    mtt = create_matcher("mtt", 1, 10, 28, "digits", buffer=buffer, syn_steps=2, expert_epochs=1, max_start_epoch=2,
                         **SMALL)
    assert mtt.describe()["lr_lr"] == 1e-7
    json.dumps(mtt.describe())


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_bad_options_fail_with_one_line():
    with pytest.raises(GenpriorError) as e:
        create_matcher("dm", 1, 10, 28, "digits", lr_net=0.1)
    assert "lr_net" in one_line(e) and "batch_real" in one_line(e)
    with pytest.raises(UnknownNameError) as e:
        create_matcher("dmm", 1, 10, 28, "digits")
    assert all(name in one_line(e) for name in list_matchers())
    with pytest.raises(GenpriorError) as e:
        create_matcher("dc", 1, 10, 28, "digits", ipc=5, **SMALL)
    assert "outer_loop" in one_line(e)
    with pytest.raises(GenpriorError) as e:
        create_matcher("mtt", 1, 10, 28, "digits", **SMALL)
    assert "genprior experts" in one_line(e)
    with pytest.raises(GenpriorError, match="depth 9"):
        create_matcher("dm", 1, 10, 28, "digits", net_options={"depth": 9})


def test_buffer_for_another_dataset_or_net_is_refused(buffer, tmp_path):
    with pytest.raises(GenpriorError) as e:
        load_experts(buffer, "mnist5k", "convnet", 1, 10, 28, net_options={"width": 16})
    assert "digits" in one_line(e) and "genprior experts --dataset mnist5k --net convnet" in one_line(e)
    with pytest.raises(GenpriorError) as e:
        create_matcher("mtt", 1, 10, 28, "digits", net="alexnet", buffer=buffer, syn_steps=2, expert_epochs=1,
                       max_start_epoch=2)
    assert "alexnet" in one_line(e)
    with pytest.raises(GenpriorError) as e:
        create_matcher("mtt", 1, 10, 28, "digits", buffer=buffer, syn_steps=2, expert_epochs=2, max_start_epoch=2,
                       **SMALL)
    assert "expert_epochs" in one_line(e)
    with pytest.raises(GenpriorError) as e:
        load_experts(tmp_path, "digits", "convnet", 1, 10, 28)
    assert "genprior experts" in one_line(e)


def test_expert_buffer_resumes_and_retrains_identically(buffer, digits):
    meta = json.loads((buffer / "buffer.json").read_text())
    assert meta["experts"] == ["expert_0.safetensors", "expert_1.safetensors"]
    assert (meta["dataset"], meta["epochs"], meta["lr"]) == ("digits", 2, 0.01)
    kept = (buffer / "expert_0.safetensors").stat().st_mtime_ns
    first = load_file(buffer / "expert_1.safetensors")
    assert sorted(first) == ["epoch_0", "epoch_1", "epoch_2"]
    (buffer / "expert_1.safetensors").unlink()
    train_experts(digits, "convnet", num_experts=2, epochs=2, out_dir=buffer, batch=64, net_options={"width": 16},
                  progress=False)
    assert (buffer / "expert_0.safetensors").stat().st_mtime_ns == kept
    again = load_file(buffer / "expert_1.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["epoch_0"], first["epoch_2"])
    with pytest.raises(GenpriorError) as e:
        train_experts(digits, "convnet", num_experts=2, epochs=3, out_dir=buffer, net_options={"width": 16},
                      progress=False)
    assert "epochs" in one_line(e)
