import pytest
import torch
from torch import nn

from genprior.errors import GenpriorError, UnknownNameError
from genprior.nets import CROSS_ARCH_POOL, create_net, list_nets, net_options
from genprior.nets._registry import NETS


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of two gain nothing from threads, and on a shared 2-core box they thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: nets too deep for small images, and the smallest size they take
MIN_RESOLUTION = {"convnetd6": 64}


def check_net(name, channels, resolution, batch=2, classes=10):
    torch.manual_seed(0)
    resolution = max(resolution, MIN_RESOLUTION.get(name, 0))
    net = create_net(name, channels, classes, resolution)
    x = torch.randn(batch, channels, resolution, resolution)
    assert net(x).shape == (batch, classes)
    emb = net.embed(x)
    assert isinstance(net.feature_dim, int)
    assert emb.shape == (batch, net.feature_dim)
    feats = net.features(x)
    assert isinstance(feats, list) and len(feats) > 0
    assert all(f.shape[0] == batch for f in feats)


@pytest.mark.parametrize("channels,resolution", [(1, 28), (3, 32)])
@pytest.mark.parametrize("name", list_nets())
def test_every_net_builds_and_runs(name, channels, resolution):
    check_net(name, channels, resolution)


@pytest.mark.parametrize(
    "name,resolution",
    [("convnetd4", 64), ("convnetd5", 128), ("convnetd6", 128), ("resnet_ap10", 64), ("resnet18", 128), ("vit", 64), ("vit", 128)],
)
def test_large_resolutions(name, resolution):
    check_net(name, 3, resolution)


@pytest.mark.parametrize("name", list_nets())
def test_gradients_reach_input(name):
    torch.manual_seed(0)
    size = max(28, MIN_RESOLUTION.get(name, 0))
    net = create_net(name, 1, 10, size)
    x = torch.randn(2, 1, size, size).requires_grad_()
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["convnet", "vit"])
def test_double_backward_for_gradient_matching(name):
    torch.manual_seed(0)
    net = create_net(name, 1, 10, 28)
    x = torch.randn(2, 1, 28, 28).requires_grad_()
    loss = nn.functional.cross_entropy(net(x), torch.tensor([0, 1]))
    grads = torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
    sum(g.pow(2).sum() for g in grads).backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("channels,resolution", [(1, 28), (3, 32)])
def test_convnet_default_is_the_protocol_net(channels, resolution):
    net = create_net("convnet", channels, 10, resolution)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    pools = [m for m in net.modules() if isinstance(m, nn.AvgPool2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [128, 128, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert convs[0].in_channels == channels
    assert convs[0].padding == ((3, 3) if resolution == 28 else (1, 1))
    assert [(g.num_groups, g.num_channels, g.affine) for g in norms] == [(128, 128, True)] * 3
    assert len(pools) == 3 and not any(isinstance(m, (nn.BatchNorm2d, nn.MaxPool2d)) for m in net.modules())
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(128 * 4 * 4, 10)]
    assert net.feature_dim == 2048


def test_convnet_overrides():
    net = create_net("convnet", 1, 10, 28, depth=4, norm="batchnorm", pool="maxpool", act="leakyrelu")
    assert len(net.features(torch.randn(2, 1, 28, 28))) == 4
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert net.feature_dim == 128 * 2 * 2
    assert net_options("convnet") == ["depth", "width", "norm", "act", "pool"]


def test_cross_arch_pool_is_registered():
    assert set(CROSS_ARCH_POOL) <= set(list_nets())
    assert list_nets("convnet*") == ["convnet", "convnet_bn", "convnet_nn", "convnetd4", "convnetd5", "convnetd6"]


def test_every_entry_has_metadata():
    for entry in NETS:
        assert entry.info["summary"] and entry.info["paper"] and entry.info["default_norm"]


def test_unknown_net_lists_known_ones():
    with pytest.raises(UnknownNameError, match="convnet.*resnet18"):
        create_net("resnet1000", 3, 10, 32)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="convnet", colour=1), "accepted: depth, width, norm, act, pool"),
        (dict(name="alexnet", norm="batchnorm"), "accepted: none"),
        (dict(name="convnet", norm="weird"), "valid: instancenorm, batchnorm"),
        (dict(name="convnet", pool="strided"), "valid: avgpool, maxpool, none"),
        (dict(name="resnet18", norm="layernorm"), "valid: instancenorm, batchnorm"),
        (dict(name="convnet", depth=6), "depth"),
        (dict(name="convnet", resolution=48), "resolution"),
        (dict(name="vit", channels=2), "channels"),
    ],
)
def test_bad_input_is_a_one_line_genprior_error(kwargs, match):
    args = dict(channels=3, num_classes=10, resolution=32)
    args.update(kwargs)
    name = args.pop("name")
    with pytest.raises(GenpriorError, match=match) as info:
        create_net(name, args.pop("channels"), args.pop("num_classes"), args.pop("resolution"), **args)
    assert "\n" not in str(info.value)


def test_convnet_pre_pool_maps_are_the_block_maps_before_pooling():
    net = create_net("convnet", 1, 10, 28, width=8).eval()
    x = torch.randn(2, 1, 28, 28)
    post, pre = net.features(x), net.features(x, pre_pool=True)
    assert [m.shape[-1] for m in pre] == [32, 16, 8, 4] and len(post) == 3
    for i, block in enumerate(net.blocks):
        assert torch.equal(block.pool(pre[i]), post[i])
    assert torch.equal(pre[-1], post[-1])


def test_idc_stems_keep_the_map_sizes_of_minimax_diffusions_evaluators():
    """IDC's stem: a 3x3 conv alone up to 64 px, a halving pool up to 128 px, a 7x7 conv and a
    pool beyond (56-px map at 224 px); convolutions He-normal over the fan-out."""
    from genprior.nets.resnet import ResNet

    x = torch.randn(1, 3, 128, 128)
    for name in ("resnet_ap10_idc", "resnet18_idc"):
        assert create_net(name, 3, 10, 128).stem(x).shape[-1] == 64
        assert create_net(name, 1, 10, 28).stem(torch.randn(1, 1, 28, 28)).shape[-1] == 28
    assert create_net("resnet_ap10", 3, 10, 128).stem(x).shape[-1] == 32  # genprior's own stem, for contrast
    big = torch.randn(1, 3, 224, 224)
    for downsample in ("avgpool", "stride"):
        assert ResNet(3, 10, 224, (1, 1, 1, 1), downsample=downsample, stem="idc").stem(big).shape[-1] == 56
    torch.manual_seed(0)
    conv = create_net("resnet18_idc", 3, 10, 32).stages[1][0].conv1  # 64 -> 128, 3 x 3: fan-in and fan-out differ
    assert conv.in_channels == 64 and conv.out_channels == 128
    assert abs(float(conv.weight.detach().std()) - (2 / (9 * 128)) ** 0.5) < 1e-3  # fan-in would give 0.059
    with pytest.raises(GenpriorError, match="valid: cifar, idc"):
        ResNet(3, 10, 32, stem="imagenet")
