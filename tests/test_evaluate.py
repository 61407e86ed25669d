import json
from dataclasses import replace
import pytest
import torch

from genprior.baselines import random_real
from genprior.data import load_dataset
from genprior.errors import GenpriorError, UnknownNameError
from genprior.evaluate import PROTOCOLS, Protocol, evaluate_synset, train_net, with_counts
from genprior.nets import create_net

from conftest import make_synset, subset

TINY = Protocol("tiny", epochs=2, lr_drop_epoch=1, num_models=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_protocols_hold_the_published_counts():
    """The counts of the shared evaluation protocol (PROTOCOL.md, summarised in the README):
    a change to a protocol's constants must fail here, not shift every result silently."""
    paper, quick = PROTOCOLS["paper"], PROTOCOLS["quick"]
    assert (paper.epochs, paper.lr_drop_epoch, paper.num_models) == (1000, 500, 5)
    assert (quick.epochs, quick.lr_drop_epoch, quick.num_models) == (300, 150, 3)
    for p in (paper, quick):
        assert (p.lr, p.momentum, p.weight_decay, p.batch_size, p.dsa) == (0.01, 0.9, 5e-4, 256, True)
    soft = PROTOCOLS["soft"]  # SRe2L / RDED's soft-label protocol (README, "Evaluation protocol")
    assert (soft.epochs, soft.lr, soft.weight_decay, soft.optimizer, soft.schedule, soft.temperature, soft.cutmix) == \
        (300, 1e-3, 0.01, "adamw", "cosine", 20.0, 1.0)
    assert (soft.dsa, soft.augment, soft.tests, soft.batch_size) == (False, "crop", 30, 100)  # RDED's crops, best of 30
    assert with_counts("quick", epochs=10).name == "quick-custom"
    assert with_counts("quick") is quick


def test_report_is_complete_and_seeded(digits):
    train, test = digits
    s = random_real(train, ipc=1, seed=0)
    a = evaluate_synset(s, archs=("convnet", "alexnet"), protocol=TINY, test=test, device="cpu", progress=False)
    b = evaluate_synset(s, archs=("convnet",), protocol=TINY, test=test, device="cpu", progress=False)
    assert set(a["results"]) == {"convnet", "alexnet"}
    r = a["results"]["convnet"]
    assert len(r["accs"]) == 2 and all(0 <= x <= 1 for x in r["accs"])
    assert r["accs"] == b["results"]["convnet"]["accs"]  # same seeds, same numbers
    assert a["protocol"]["name"] == "tiny" and a["seeds"] == [0, 1]
    assert a["dsa_strategy"] == "color_crop_cutout_scale_rotate"  # digits: no flip
    assert a["cross_arch_mean"] == pytest.approx((r["mean"] + a["results"]["alexnet"]["mean"]) / 2)
    # what the timings ran under: the thread count and the allocator setting (genprior/runtime.py)
    assert a["threads"] == 1 and a["memory"]["keep_freed_memory"] in ("on", "off", "environment", "partial", "unsupported")


def test_training_learns_the_real_task(digits):
    train, test = digits
    s = random_real(train, ipc=5, seed=0)
    proto = Protocol("short", epochs=30, lr_drop_epoch=20, num_models=1)
    report = evaluate_synset(s, protocol=proto, test=test, device="cpu", progress=False)
    assert report["results"]["convnet"]["mean"] > 0.5  # chance is 0.1


def test_soft_labels_train(digits):
    train, _ = digits
    torch.manual_seed(0)
    net = create_net("convnet", 1, 10, 28)
    x = train.images[:20]
    soft = torch.nn.functional.one_hot(train.labels[:20], 10).float()
    proto = Protocol("short", epochs=30, lr_drop_epoch=20, num_models=1, dsa=False)
    train_net(net, x, soft, proto, None, torch.Generator().manual_seed(0))
    net.eval()
    assert (net(x).argmax(1) == train.labels[:20]).float().mean() > 0.9


def test_bad_inputs(digits):
    train, test = digits
    s = random_real(train, ipc=1)
    with pytest.raises(UnknownNameError, match="quick"):
        evaluate_synset(s, protocol="fast", test=test)
    with pytest.raises(UnknownNameError, match="convnet"):
        evaluate_synset(s, archs=("resnet999",), protocol=TINY, test=test, device="cpu")
    with pytest.raises(GenpriorError, match="has none; drop --soft-labels"):
        evaluate_synset(s, protocol=TINY, test=test, device="cpu", soft_labels=True)
    other = make_synset(ipc=1, num_classes=10, channels=1, resolution=28)
    with pytest.raises(GenpriorError, match="normalised"):
        evaluate_synset(other, protocol=TINY, test=test, device="cpu")
    small = make_synset(ipc=1, num_classes=3, resolution=28)
    with pytest.raises(GenpriorError, match="3 classes"):
        evaluate_synset(small, protocol=TINY, test=test, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GenpriorError, match="--device cpu"):
            evaluate_synset(s, protocol=TINY, test=test, device="cuda")


def _tiny_run_timed(tmp_path, stop_after=None):
    timing = {}
    _tiny_run(tmp_path, stop_after=stop_after, timing=timing)
    return timing


def _tiny_run(tmp_path, stop_after=None, state=True, scale=1.0, timing=None, calls=None, proto=None, teacher=None):
    from genprior.augment import DSA

    torch.manual_seed(0)
    net = create_net("convnet", 1, 10, 28, width=8)
    images, targets = scale * torch.randn(30, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.arange(30) % 10
    proto = proto or Protocol("t", epochs=6, lr_drop_epoch=3, num_models=1, batch_size=16)
    calls = [] if calls is None else calls  # one entry per epoch trained in this call

    def on_epoch():
        calls.append(1)
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "state.safetensors" if state else None
    train_net(net, images, targets, proto, DSA("color_crop_cutout_scale_rotate"), gen, on_epoch=on_epoch,
              state_path=path, save_every=2, timing=timing, teacher=teacher)
    return net


def test_killed_training_resumes_bit_identically(tmp_path):
    straight = _tiny_run(tmp_path / "a", state=False)
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):  # killed during epoch 5 (after the state of epoch 4 was saved)
        _tiny_run(tmp_path / "b", stop_after=5)
    assert (tmp_path / "b" / "state.safetensors").exists()
    calls = []
    resumed = _tiny_run(tmp_path / "b", calls=calls)
    assert len(calls) == 6 - 4  # continued after epoch 4 of 6, not trained again from the start
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert not (tmp_path / "b" / "state.safetensors").exists(), "the state file is removed when training ends"


def test_resumed_training_counts_the_time_of_every_part(tmp_path):
    from safetensors import safe_open

    with pytest.raises(KeyboardInterrupt):
        _tiny_run_timed(tmp_path, stop_after=5)  # the state of epoch 4 holds the first part's time
    with safe_open(str(tmp_path / "state.safetensors"), "pt") as f:
        first_part = json.loads(f.metadata()["genprior_train_state"])["elapsed_s"]
    assert first_part > 0
    timing = _tiny_run_timed(tmp_path)
    assert timing["train_s"] > first_part  # both parts, not the last one only


def test_corrupted_training_state_is_named(tmp_path):
    (tmp_path / "state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GenpriorError, match="delete it"):
        _tiny_run(tmp_path)


def test_training_state_of_other_data_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path, stop_after=3)
    with pytest.raises(GenpriorError, match="other data"):
        _tiny_run(tmp_path, scale=2.0)


def test_evaluation_with_a_state_dir_skips_finished_networks(digits, tmp_path, monkeypatch):
    import genprior.evaluate as ev

    train, test = digits
    s = random_real(train, ipc=1, seed=0)
    proto = Protocol("short", epochs=4, lr_drop_epoch=2, num_models=2)
    first = evaluate_synset(s, protocol=proto, test=test, device="cpu", progress=False, state_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done-convnet-seed0-short.json", "done-convnet-seed1-short.json"]
    monkeypatch.setattr(ev, "train_net", lambda *a, **k: pytest.fail("a finished network was trained again"))
    again = evaluate_synset(s, protocol=proto, test=test, device="cpu", progress=False, state_dir=tmp_path)
    assert again["results"]["convnet"]["accs"] == first["results"]["convnet"]["accs"]
    # a resumed evaluation reports the time the networks took, not this process's share
    assert again["results"]["convnet"]["model_times_s"] == first["results"]["convnet"]["model_times_s"]
    assert again["results"]["convnet"]["time_s"] == pytest.approx(sum(first["results"]["convnet"]["model_times_s"]))


def test_pgd_robust_accuracy_beside_clean_accuracy(digits, tmp_path, monkeypatch):
    import genprior.evaluate as ev
    from genprior.evaluate import PGDAttack, robust_accuracy

    train, test = digits[0], subset(digits[1], 15)  # 150 test images: the attacks are the cost
    s = random_real(train, ipc=5, seed=0)
    # one trained network: a tiny budget barely moves its accuracy, a large one breaks it
    torch.manual_seed(0)
    net = create_net("convnet", 1, 10, train.resolution)
    train_net(net, s.images, s.labels, Protocol("short", epochs=30, lr_drop_epoch=20, num_models=1), None,
              torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    clean = ev.test_accuracy(net, test, cpu)
    assert clean > 0.5
    assert robust_accuracy(net, test, PGDAttack(eps=1e-4), cpu, torch.Generator().manual_seed(0)) == pytest.approx(clean, abs=0.01)
    assert robust_accuracy(net, test, PGDAttack(eps=0.5), cpu, torch.Generator().manual_seed(0)) < 0.2
    # in a report, beside clean accuracy, with the attack stated
    attack = PGDAttack(eps=8 / 255)
    report = evaluate_synset(s, protocol=TINY, test=test, device="cpu", progress=False, attack=attack,
                             state_dir=tmp_path)
    r = report["results"]["convnet"]
    assert report["attack"] == {"attack": "pgd-linf", "eps": 8 / 255, "steps": 10, "step_size": 2 / 255,
                                "random_start": True, "space": "pixels in [0, 1], then the data's normalisation"}
    assert len(r["robust_accs"]) == 2 and r["robust_mean"] <= r["mean"]

    # resumed: the finished networks' robust accuracies are kept with them, keyed by the attack
    class TrainedAgain(Exception):
        pass

    def refuse(*a, **k):
        raise TrainedAgain

    monkeypatch.setattr(ev, "train_net", refuse)
    again = evaluate_synset(s, protocol=TINY, test=test, device="cpu", progress=False, attack=attack,
                            state_dir=tmp_path)
    assert again["results"]["convnet"]["robust_accs"] == r["robust_accs"]
    with pytest.raises(TrainedAgain):  # another budget is another result
        evaluate_synset(s, protocol=TINY, test=test, device="cpu", progress=False, attack=PGDAttack(eps=0.1),
                        state_dir=tmp_path)


@pytest.mark.parametrize("kwargs, message", [(dict(eps=0), "in \\(0, 1\\]"), (dict(eps=2.0), "pixel units"),
                                             (dict(eps=0.1, steps=0), "steps must be"),
                                             (dict(eps=0.1, step_size=-1), "step size")])
def test_bad_pgd_settings(kwargs, message):
    from genprior.evaluate import PGDAttack

    with pytest.raises(GenpriorError, match=message):
        PGDAttack(**kwargs)


SOFT_TINY = Protocol("soft-t", epochs=6, lr_drop_epoch=6, num_models=1, lr=1e-3, weight_decay=0.01, batch_size=16,
                     optimizer="adamw", schedule="cosine", temperature=4.0, cutmix=1.0)


def test_a_killed_soft_label_training_resumes_bit_identically(tmp_path):
    """AdamW's whole state, the cosine schedule, CutMix's draws and the teacher's labels all resume."""
    torch.manual_seed(5)
    teacher = create_net("convnet", 1, 10, 28, width=8).eval().requires_grad_(False)
    straight = _tiny_run(tmp_path / "a", state=False, proto=SOFT_TINY, teacher=teacher)
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path / "b", stop_after=5, proto=SOFT_TINY, teacher=teacher)
    calls = []
    resumed = _tiny_run(tmp_path / "b", calls=calls, proto=SOFT_TINY, teacher=teacher)
    assert len(calls) == 2
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    plain = _tiny_run(tmp_path / "c", state=False)  # the hard-label protocol trains another network
    assert not all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), plain.state_dict().values()))
    with pytest.raises(GenpriorError, match="distils from a teacher"):
        _tiny_run(tmp_path / "d", state=False, proto=SOFT_TINY)


def test_cutmix_pastes_a_box_of_another_image():
    from genprior.evaluate import cutmix

    x = torch.arange(4, dtype=torch.float).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    torch.manual_seed(0)
    mixed, perm, lam = cutmix(x, 1.0, torch.Generator().manual_seed(0))
    for i in range(4):
        own = (mixed[i] == x[i]).float().mean()
        assert own == pytest.approx(lam) or perm[i] == i  # the share of its own pixels is lam
        assert set(mixed[i].unique().tolist()) <= {float(i), float(perm[i])}


def test_the_soft_protocol_needs_the_teacher_of_its_data(digits, tmp_path):
    import json as _json

    from genprior.teacher import train_teacher

    train, test = digits
    folder = train_teacher(train, tmp_path / "teacher", epochs=1, progress=False)
    s = random_real(train, ipc=5, seed=0)
    soft = with_counts("soft", epochs=15, num_models=1)
    report = evaluate_synset(s, protocol=soft, test=test, device="cpu", progress=False, teacher=folder)
    assert report["teacher"]["dataset"] == "digits" and report["teacher"]["path"] == str(folder)
    assert report["results"]["convnet"]["mean"] > 0.3  # chance is 0.1
    with pytest.raises(GenpriorError, match="distils from a teacher"):
        evaluate_synset(s, protocol=soft, test=test, device="cpu", progress=False)
    card = _json.loads((folder / "teacher.json").read_text())
    (folder / "teacher.json").write_text(_json.dumps({**card, "dataset": "mnist5k"}))
    with pytest.raises(GenpriorError, match="learned from 'mnist5k' data at .* px, not from this digits train split"):
        evaluate_synset(s, protocol=soft, test=test, device="cpu", progress=False, teacher=folder)


def test_states_of_the_first_protocols_keep_their_fingerprint():
    from genprior.evaluate import _fingerprint

    net = create_net("convnet", 1, 10, 28, width=8)
    key = json.loads(_fingerprint(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), PROTOCOLS["quick"], net))
    assert set(key["protocol"]) == {"name", "epochs", "lr_drop_epoch", "num_models", "lr", "momentum", "weight_decay",
                                    "batch_size", "dsa"}


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.1307, 0.3081)])
@pytest.mark.parametrize("pixel", [0.0, 1.0])
def test_pgd_moves_every_pixel_the_gradient_asks_for_even_at_the_edge_of_the_range(mean, std, pixel):
    """The budget and the [0, 1] range hold in pixel space whatever the data's normalisation: a
    black pixel's random start below 0 is projected back to 0, so the attack pushes it up to the
    budget; a white one cannot go above 1."""
    from genprior.evaluate import PGDAttack, robust_accuracy

    seen = []

    class SumNet(torch.nn.Module):  # class 0's logit grows with the pixels; the label is 1
        def forward(self, x):
            seen.append(x.detach())
            return torch.stack([x.flatten(1).sum(1), torch.zeros(len(x))], dim=1)

    class Flat:
        images = torch.full((4, 1, 5, 5), (pixel - mean) / std)
        labels, mean_, std_ = torch.ones(4, dtype=torch.long), (mean,), (std,)

        def __len__(self):
            return 4

    data = Flat()
    data.mean, data.std = data.mean_, data.std_
    eps = 0.1
    acc = robust_accuracy(SumNet(), data, PGDAttack(eps=eps, steps=10), torch.device("cpu"),
                          torch.Generator().manual_seed(0))
    attacked = min(pixel + eps, 1.0)  # pushed up to the budget, inside the range
    assert torch.allclose(seen[-1], torch.full_like(seen[-1], (attacked - mean) / std), atol=1e-5)
    if (pixel, mean) == (0.0, 0.0):
        assert acc == 0.0  # class 0's logit, 25 * eps, beats class 1's 0


# ---- the hard-label protocol of Minimax Diffusion ---------------------------------------------
def test_minimax_protocols_hold_the_public_codes_settings():
    small, big = PROTOCOLS["minimax"], PROTOCOLS["minimax-imagenet"]
    for p in (small, big):
        assert (p.lr, p.momentum, p.weight_decay, p.batch_size, p.schedule, p.milestones, p.gamma, p.cutmix) == \
            (0.01, 0.9, 5e-4, 64, "multistep", ((2, 3), (5, 6)), 0.2, 1.0)
    assert (small.epochs, small.cutmix_p, small.dsa_drop, small.tests, small.augment) == \
        (1000, 0.5, ("cutout",), 0, "idc")
    assert (big.dsa, big.augment, big.cutmix_p, big.tests) == (False, "imagenet", 1.0, 100)
    epochs = {ipc: big.for_set(ipc, 10).epochs for ipc in (1, 10, 50, 100, 500, 1000)}
    assert epochs == {1: 3000, 10: 2000, 50: 1500, 100: 1000, 500: 500, 1000: 300}
    assert big.for_set(10, 100).epochs == 1300 and big.for_set(10, 10).test_every == 20
    assert with_counts(big, epochs=7).for_set(1, 10).epochs == 7  # given epochs win over the IPC rule
    assert with_counts(big, epochs=2000).for_set(1, 10).epochs == 2000  # also when they equal the default
    assert small.for_set(1, 10) is small


def test_multistep_lowers_the_lr_at_its_milestones_and_keeps_the_optimiser(tmp_path):
    """gamma 0 at half time: the second half changes nothing, so 4 epochs end where 2 did."""
    frozen = Protocol("m", epochs=4, lr_drop_epoch=4, num_models=1, batch_size=16, schedule="multistep",
                      milestones=((1, 2),), gamma=0.0)
    half = Protocol("m", epochs=2, lr_drop_epoch=2, num_models=1, batch_size=16, schedule="multistep")
    a, b = _tiny_run(tmp_path, state=False, proto=frozen), _tiny_run(tmp_path, state=False, proto=half)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    c = _tiny_run(tmp_path, state=False, proto=Protocol("m", epochs=4, lr_drop_epoch=4, num_models=1, batch_size=16,
                                                        schedule="multistep", milestones=((1, 2),), gamma=0.2))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_best_of_the_periodic_tests_survives_a_kill(tmp_path):
    proto = Protocol("b", epochs=6, lr_drop_epoch=3, num_models=1, batch_size=16, tests=3)  # tests after 2, 4, 6
    scores = {2: 0.3, 4: 0.8, 6: 0.5}

    def run(stop_after=None):
        torch.manual_seed(0)
        net = create_net("convnet", 1, 10, 28, width=8)
        epoch = [0]

        def on_epoch():
            epoch[0] += 1
            if epoch[0] == stop_after:
                raise KeyboardInterrupt

        timing = {}
        seen = []

        def tester(trained):
            seen.append(1)
            return scores[start[0] + 2 * len(seen)]

        train_net(net, torch.randn(20, 1, 28, 28), torch.arange(20) % 10, proto, None, torch.Generator().manual_seed(0),
                  on_epoch=on_epoch, state_path=tmp_path / "s.safetensors", save_every=2, timing=timing,
                  tester=tester)
        return timing

    start = [0]
    assert run()["best_acc"] == 0.8 and run()["best_epoch"] == 4
    with pytest.raises(KeyboardInterrupt):
        run(stop_after=5)  # tested after 2 and 4; the state of epoch 4 holds the best so far
    start[0] = 4
    timing = run()  # resumes after epoch 4: one more test, after epoch 6
    assert (timing["best_acc"], timing["best_epoch"]) == (0.8, 4)


def test_imagenet_augment_crops_flips_and_jitters_in_pixel_space():
    from genprior.augment import ImageNetAugment

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    aug = ImageNetAugment(mean, std)
    flat = ((torch.full((4, 3, 32, 32), 0.5) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    out = aug(flat, generator=torch.Generator().manual_seed(0))
    pixels = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    # a flat grey image stays flat through crop and flip; jitter and lighting shift each image as a whole
    assert torch.allclose(pixels, pixels.mean(dim=(2, 3), keepdim=True), atol=1e-5)
    assert not torch.allclose(pixels, torch.full_like(pixels, 0.5), atol=1e-3)
    assert torch.equal(out, aug(flat, generator=torch.Generator().manual_seed(0)))  # seeded
    # no jitter, no lighting: a left-to-right ramp stays a ramp (cropped, stretched), reversed on
    # about half of the images (the flip)
    crop_only = ImageNetAugment(mean, std, jitter=0.0, lighting=0.0)
    ramp = torch.linspace(0, 1.5, 32).view(1, 1, 1, 32).expand(64, 3, 32, 32).contiguous()
    moved = crop_only(ramp, generator=torch.Generator().manual_seed(1))
    rising = (moved[..., 1:] - moved[..., :-1] >= -1e-6).flatten(1).all(dim=1)
    falling = (moved[..., 1:] - moved[..., :-1] <= 1e-6).flatten(1).all(dim=1)
    assert bool((rising | falling).all()) and 16 < int(falling.sum()) < 48


def test_minimax_protocol_runs_and_reports_the_best_beside_the_last(digits):
    train, test = digits
    s = random_real(train, ipc=2, seed=0)
    proto = replace(with_counts("minimax-imagenet", epochs=4, num_models=1), tests=2)
    report = evaluate_synset(s, protocol=proto, test=test, device="cpu", progress=False)
    r = report["results"]["convnet"]
    assert r["best_mean"] >= r["mean"] - 1e-9 and len(r["best_accs"]) == 1 and "best_note" in report
    assert report["dsa_strategy"].startswith("imagenet")
    small = evaluate_synset(s, protocol=with_counts("minimax", epochs=3, num_models=1), test=test, device="cpu",
                            progress=False)
    assert small["dsa_strategy"].startswith("color_crop_scale_rotate (composed") and \
        "best_mean" not in small["results"]["convnet"]


def test_soft_protocol_decays_weight_matrices_only_and_is_kept_apart_from_its_earlier_code():
    from genprior.evaluate import _fingerprint, adamw_groups, protocol_revision

    net = create_net("convnet", 1, 10, 28)
    decay, rest = adamw_groups(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert all("weight" in names[id(p)] and p.dim() > 1 for p in decay["params"])
    assert rest["weight_decay"] == 0.0 and any("bias" in names[id(p)] for p in rest["params"])
    assert any("norm" in names[id(p)] or "classifier.bias" in names[id(p)] for p in rest["params"])
    soft = PROTOCOLS["soft"]
    assert protocol_revision(soft) == {"augment": 2, "optimizer": 2} and protocol_revision(PROTOCOLS["quick"]) == {}
    x, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    assert '"revision"' in _fingerprint(x, y, soft, net) and '"revision"' not in _fingerprint(x, y, PROTOCOLS["quick"], net)


def test_crop_and_no_augmentation_protocols_say_what_they_ran(digits):
    from genprior.bench import cell_protocol

    train, test = digits
    s = random_real(train, ipc=1, seed=0)
    crop = replace(with_counts("quick", epochs=2, num_models=1), dsa=False, augment="crop")
    assert evaluate_synset(s, protocol=crop, test=test, device="cpu", progress=False)["dsa_strategy"] == \
        "crop: rrc 0.5-1, flip"
    config = {"protocol": {"name": "minimax", "epochs": 2}}
    plain = replace(cell_protocol(config, "plain"), num_models=1)
    assert evaluate_synset(s, protocol=plain, test=test, device="cpu", progress=False)["dsa_strategy"] is None
