"""StyleGAN2 in plain PyTorch, and the prior GLaD optimises through it.

The layers follow NVlabs' StyleGAN2-ADA (``training/networks.py``): the same
parameter and buffer names, the same runtime weight scaling (equalised learning
rate) and the same [1, 3, 3, 1] FIR resampling, so the state dict of an ADA pickle
loads by name (``convert.py``) and decodes the same images. The custom CUDA ops
(upfirdn2d, bias_act, conv2d_resample) are replaced by their plain-PyTorch
equivalents, so the same code runs on CPU and takes double backward (R1).

GLaD (Cazenavette et al., CVPR 2023) distils in w+ or in an intermediate feature
map F of the synthesis network; ``StyleGANPrior`` exposes z, w, w+ and F.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..errors import GenpriorError
from ..images import resize_images
from .base import Latents, Prior, keep_card_extras, load_model, read_card

NOISE_MODES = ("const", "random", "none")
LRELU_SLOPE = 0.2
ACT_GAINS = {"linear": 1.0, "lrelu": math.sqrt(2.0)}
GENERATOR_FOLDER = "generator"


# ---- plain-PyTorch versions of the ADA ops ---------------------------------------------
def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
    """Separable taps -> the normalised 2-D filter ADA's ``setup_filter`` stores (for
    fewer than 8 taps), so a converted ``resample_filter`` buffer has the same shape."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor], act: str = "linear", gain: Optional[float] = None,
             clamp: Optional[float] = None) -> torch.Tensor:
    """Add bias (over dim 1), activate, scale by ``gain`` (default: the activation's
    variance-preserving gain), clamp: the order ADA's bias_act uses."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.dim() - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    gain = ACT_GAINS[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fir_filter(x: torch.Tensor, f: torch.Tensor, pad: Tuple[int, int, int, int], gain: float = 1.0) -> torch.Tensor:
    """Pad (negative crops) by (x0, x1, y0, y1), then convolve every channel with ``f``
    (true convolution, as upfirdn2d): a depthwise conv with the flipped filter."""
    channels = x.shape[1]
    x = F.pad(x, list(pad))
    weight = (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(channels, 1, 1, 1)
    return F.conv2d(x, weight, groups=channels)


def zero_insert(x: torch.Tensor) -> torch.Tensor:
    """Upsample by 2 with a zero after every pixel (upfirdn2d's ``up=2``)."""
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, 1, 0, 0, 0, 1])
    return x.reshape(n, c, h * 2, w * 2)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling (ADA ``upsample2d``): zero insertion, then the filter x4."""
    fw = f.shape[-1]
    p0, p1 = (fw + 1) // 2, (fw - 2) // 2
    return fir_filter(zero_insert(x), f, (p0, p1, p0, p1), gain=4.0)


def conv_up2(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, padding: int) -> torch.Tensor:
    """Convolution with 2x upsampling as ADA's conv2d_resample computes it: a stride-2
    transposed convolution, then the FIR filter x4 to remove the zero-insertion images."""
    kh = weight.shape[-1]
    fw = f.shape[-1]
    p0 = padding + (fw + 1) // 2 - (kh - 1)
    p1 = padding + (fw - 2) // 2 - (kh - 2)
    crop = max(min(-p0, -p1), 0)
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=crop)
    p0, p1 = p0 + crop, p1 + crop
    return fir_filter(x, f, (p0, p1, p0, p1), gain=4.0)


def conv_down2(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, padding: int) -> torch.Tensor:
    """Convolution with 2x downsampling (ADA conv2d_resample, ``down=2``)."""
    kh = weight.shape[-1]
    fw = f.shape[-1]
    p0, p1 = padding + (fw - 1) // 2, padding + (fw - 2) // 2
    if kh == 1:
        x = fir_filter(x, f, (p0, p1, p0, p1))[:, :, ::2, ::2]
        return F.conv2d(x, weight)
    return F.conv2d(fir_filter(x, f, (p0, p1, p0, p1)), weight, stride=2)


# ---- layers (ADA names) -------------------------------------------------------------------
class FullyConnectedLayer(nn.Module):
    """Equalised-lr linear layer: weights stored at unit scale, scaled at run time so
    Adam's per-parameter steps are uniform; ``lr_multiplier`` slows the mapping net."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution with optional FIR 2x downsampling (discriminator)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, resample_filter: Sequence[float] = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ACT_GAINS[activation]
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down == 2:
            x = conv_down2(x, w, self.resample_filter, self.padding)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z and a class embedding (an FC layer on the one-hot label), each normalised by
    its 2nd moment, concatenated and mapped by ``num_layers`` lrelu FC layers to w.

    ``w_avg`` (the running mean of w, the truncation centre) is only updated when the
    caller asks (``update_w_avg=True``, the training loop), never as a side effect of
    decoding in train mode."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int], num_layers: int = 8,
                 embed_features: Optional[int] = None, layer_features: Optional[int] = None,
                 lr_multiplier: float = 0.01, w_avg_beta: Optional[float] = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Optional[torch.Tensor], labels: Optional[torch.Tensor], truncation_psi: float = 1.0,
                update_w_avg: bool = False) -> torch.Tensor:
        """(N, num_ws, w_dim) w+ (or (N, w_dim) when ``num_ws`` is None)."""
        parts = []
        if self.z_dim:
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim:
            onehot = F.one_hot(labels, self.c_dim).to(torch.float32)
            parts.append(normalize_2nd_moment(self.embed(onehot)))
        x = torch.cat(parts, dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv with demodulation, per-pixel noise and lrelu.

    Computed unfused (scale the input by the styles, one shared-weight convolution,
    scale the output by the demodulation coefficients): the same values as ADA's
    grouped convolution, and much cheaper on CPU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, resample_filter: Sequence[float] = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        weight = self.weight.to(x.dtype)
        x = x * styles.to(x.dtype)[:, :, None, None]
        if self.up == 2:
            x = conv_up2(x, weight, self.resample_filter, self.padding)
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        # sum_{i,k} (w_oik s_i)^2 = sum_i s_i^2 sum_k w_oik^2: ADA's coefficients without the (N, O, I, k, k) tensor
        demod = styles.square().matmul(self.weight.square().sum(dim=[2, 3]).t()).add(1e-8).rsqrt()
        x = x * demod.to(x.dtype)[:, :, None, None]
        if self.use_noise and noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act="lrelu", gain=ACT_GAINS["lrelu"] * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = F.conv2d(x * styles.to(x.dtype)[:, :, None, None], self.weight.to(x.dtype))
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip architecture: (const or 2x-up conv0), conv1, ToRGB
    added to the upsampled image of the block below."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: Optional[float] = None,
                 use_noise: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        layer_kwargs = dict(w_dim=w_dim, resolution=resolution, use_noise=use_noise,
                            resample_filter=resample_filter, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                noise_mode: str = "const") -> Tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        y = self.torgb(x, next(w_iter)).float()
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """Blocks ``b4`` ... ``b{img_resolution}``; block ``b{r}`` reads w+ entries
    ``[start_r, start_r + num_conv + 1)`` where its ToRGB shares the entry of the next
    block's first conv (ADA's layout), and the result is resized to
    ``output_resolution`` (antialiased bilinear, differentiable) when that differs."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channels: Dict[int, int],
                 output_resolution: int, resample_filter: Sequence[float] = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None, use_noise: bool = True):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.output_resolution = output_resolution
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.channels = dict(channels)
        self.ws_start: Dict[int, int] = {}
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, resample_filter=resample_filter,
                                   conv_clamp=conv_clamp, use_noise=use_noise)
            self.ws_start[res] = self.num_ws
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1

    @property
    def feature_blocks(self) -> Tuple[int, ...]:
        """Blocks whose output can serve as GLaD's feature space F (all but the last)."""
        return tuple(self.block_resolutions[:-1])

    def check_feature_block(self, feature_block: int) -> int:
        if feature_block not in self.feature_blocks:
            raise GenpriorError(
                f"feature_block must be one of {', '.join(map(str, self.feature_blocks))} for this generator, got {feature_block}"
            )
        return feature_block

    def num_ws_after(self, feature_block: int) -> int:
        """How many w+ entries the blocks after ``feature_block`` read."""
        return self.num_ws - self.ws_start[self.check_feature_block(feature_block) * 2]

    def _run(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
             resolutions: Sequence[int], noise_mode: str) -> Tuple[torch.Tensor, torch.Tensor]:
        if noise_mode not in NOISE_MODES:
            raise GenpriorError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        offset = self.ws_start[resolutions[0]]
        for res in resolutions:
            block = getattr(self, f"b{res}")
            start = self.ws_start[res] - offset
            x, img = block(x, img, ws[:, start:start + block.num_conv + block.num_torgb].float(), noise_mode=noise_mode)
        return x, img

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        return resize_images(img, self.output_resolution)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Images in about [-1, 1] at ``output_resolution`` from w+ (N, num_ws, w_dim)."""
        _, img = self._run(None, None, ws, self.block_resolutions, noise_mode)
        return self._resize(img)

    def features(self, ws: torch.Tensor, feature_block: int,
                 noise_mode: str = "const") -> Tuple[torch.Tensor, torch.Tensor]:
        """The feature map x and the skip image of block ``feature_block`` (GLaD's F)."""
        resolutions = [r for r in self.block_resolutions if r <= self.check_feature_block(feature_block)]
        return self._run(None, None, ws, resolutions, noise_mode)

    def from_features(self, x: torch.Tensor, img: torch.Tensor, ws: torch.Tensor,
                      noise_mode: str = "const") -> torch.Tensor:
        """Resume synthesis after the block that produced ``x`` (its resolution says
        which); ``ws`` holds the ``num_ws_after`` entries of the later blocks."""
        feature_block = self.check_feature_block(x.shape[-1])
        resolutions = [r for r in self.block_resolutions if r > feature_block]
        _, img = self._run(x, img, ws, resolutions, noise_mode)
        return self._resize(img)


def block_channels(img_resolution: int, channel_base: int, channel_max: int) -> Dict[int, int]:
    """ADA's channel rule: ``min(channel_base // res, channel_max)`` per resolution."""
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(1, int(math.log2(img_resolution)) + 1)}


class StyleGAN2Generator(ModelMixin, ConfigMixin):
    """Class-conditional StyleGAN2 generator (skip architecture, no custom ops).

    The defaults are the shipped MNIST prior: 32 px synthesis with 128/64/32/16
    channels at 4/8/16/32 px (ADA's rule with channel_base 512), resized to 28 px;
    a third of the compute of 128/128/64/32, so it trains on a 2-core CPU. ``mapping`` and ``synthesis`` carry
    ADA's submodule names, so ``generator.mapping(z, labels)`` gives w+ and
    ``generator.synthesis(ws)`` images, as in ADA (labels are class indices here)."""

    @register_to_config
    def __init__(self, z_dim: int = 128, c_dim: int = 10, w_dim: int = 128, mapping_layers: int = 4,
                 embed_features: Optional[int] = None, layer_features: Optional[int] = None,
                 mapping_lr_multiplier: float = 0.01, w_avg_beta: float = 0.995, img_resolution: int = 32,
                 img_channels: int = 1, channel_base: int = 512, channel_max: int = 128,
                 conv_clamp: Optional[float] = None, use_noise: bool = True,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), output_resolution: Optional[int] = 28):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise GenpriorError(f"img_resolution must be a power of 2 of at least 8, got {img_resolution}")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.output_resolution = output_resolution or img_resolution
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels,
                                          block_channels(img_resolution, channel_base, channel_max),
                                          output_resolution=self.output_resolution, resample_filter=resample_filter,
                                          conv_clamp=conv_clamp, use_noise=use_noise)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, num_layers=mapping_layers,
                                      embed_features=embed_features, layer_features=layer_features,
                                      lr_multiplier=mapping_lr_multiplier, w_avg_beta=w_avg_beta)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, truncation_psi: float = 1.0,
                noise_mode: str = "const", update_w_avg: bool = False) -> torch.Tensor:
        ws = self.mapping(z, labels, truncation_psi=truncation_psi, update_w_avg=update_w_avg)
        return self.synthesis(ws, noise_mode=noise_mode)


# ---- discriminator --------------------------------------------------------------------------
class DiscriminatorBlock(nn.Module):
    """Residual block: (fromrgb on the first), conv0, conv1 with 2x down, plus a 1x1
    down-sampled skip, both halves scaled by sqrt(1/2)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x: Optional[torch.Tensor], img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Append the average std over groups of images as an extra channel, so D can see
    a lack of variety. The group is the largest divisor of the batch up to
    ``group_size`` (any batch size works; ADA requires divisibility)."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = math.gcd(n, self.group_size)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, conv, FC, then projection onto the class code."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int = 4, mbstd_group_size: int = 4,
                 mbstd_num_channels: int = 1, conv_clamp: Optional[float] = None):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, cmap_dim or 1)

    def forward(self, x: torch.Tensor, cmap: Optional[torch.Tensor]) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if cmap is not None:
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class StyleGAN2Discriminator(ModelMixin, ConfigMixin):
    """Class-conditional StyleGAN2 discriminator (residual, minibatch std, projection
    onto a mapped class code), ADA names. Inputs at another size than
    ``img_resolution`` (28 px digits for a 32 px D) are resized bilinearly first, so
    D judges exactly what the prior decodes."""

    @register_to_config
    def __init__(self, c_dim: int = 10, img_resolution: int = 32, img_channels: int = 1, channel_base: int = 512,
                 channel_max: int = 128, cmap_dim: Optional[int] = None, mapping_layers: int = 2,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1, conv_clamp: Optional[float] = None,
                 resample_filter: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        channels = block_channels(img_resolution, channel_base, channel_max)
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        cmap_dim = (channels[4] if cmap_dim is None else cmap_dim) if c_dim else 0
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res],
                                                        channels[res // 2], img_channels,
                                                        resample_filter=resample_filter, conv_clamp=conv_clamp))
        if c_dim:
            self.mapping = MappingNetwork(0, c_dim, cmap_dim, num_ws=None, num_layers=mapping_layers, w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim, mbstd_group_size=mbstd_group_size,
                                        mbstd_num_channels=mbstd_num_channels, conv_clamp=conv_clamp)

    def forward(self, img: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits (N,): positive = real."""
        if img.shape[-1] != self.img_resolution:
            img = F.interpolate(img, size=(self.img_resolution, self.img_resolution), mode="bilinear",
                                align_corners=False)
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        cmap = self.mapping(None, labels) if self.c_dim else None
        return self.b4(x, cmap).squeeze(1)


# ---- the prior ----------------------------------------------------------------------------
class StyleGANPrior(Prior):
    """A frozen StyleGAN2 generator as a prior with latent spaces

    - ``z``:  ``{"z": (N, z_dim)}``, mapped with the class label (and truncation);
    - ``w``:  ``{"w": (N, w_dim)}``, one w broadcast to every layer;
    - ``w+``: ``{"w+": (N, num_ws, w_dim)}``, one w per layer (GLaD's default);
    - ``F``:  ``{"F": (N, C, r, r), "F_img": (N, img_channels, r, r), "w+": (N, k, w_dim)}``:
      the feature map and skip image of block ``feature_block`` (r px) and the w+
      entries of the ``k`` later layers (GLaD's intermediate space).

    Labels only matter in ``z``; in the other spaces the class lives in the latent.
    ``mean`` initialisation is GLaD's class mean: the average w of ``mean_samples``
    z drawn with a per-class seed (cached); in ``z``, the drawn z whose w is nearest
    that mean. The generator is frozen (``requires_grad_(False)``); a method that
    fine-tunes it turns that back on."""

    family = "stylegan"
    latent_spaces = ("z", "w", "w+", "F")
    default_space = "w+"

    def __init__(self, generator: StyleGAN2Generator, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,),
                 feature_block: int = 8, truncation_psi: float = 1.0, noise_mode: str = "const",
                 mean_samples: int = 1000):
        channels = generator.img_channels
        mean = tuple(mean) * (channels if len(mean) == 1 else 1)
        std = tuple(std) * (channels if len(std) == 1 else 1)
        super().__init__(generator.c_dim or None, channels, generator.output_resolution, mean, std)
        if noise_mode not in NOISE_MODES:
            raise GenpriorError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if mean_samples < 1:
            raise GenpriorError(f"mean_samples must be at least 1, got {mean_samples}")
        self.generator = generator.eval().requires_grad_(False)
        self.feature_block = generator.synthesis.check_feature_block(int(feature_block))
        self.truncation_psi = float(truncation_psi)
        self.noise_mode = noise_mode
        self.mean_samples = int(mean_samples)
        self._class_means: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        self.card = {
            "feature_block": self.feature_block,
            "truncation_psi": self.truncation_psi,
            "noise_mode": self.noise_mode,
            "mean_samples": self.mean_samples,
            "z_dim": generator.z_dim,
            "w_dim": generator.w_dim,
            "num_ws": generator.num_ws,
            "synthesis_resolution": generator.img_resolution,
            "components": {"generator": GENERATOR_FOLDER},
        }

    # ---- latents -------------------------------------------------------------------------
    @property
    def _device(self) -> torch.device:
        return self.out_mean.device

    @torch.no_grad()
    def class_mean(self, label: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(z nearest the class-mean w, the class-mean w) of class ``label``, seeded by
        the class index so every call and every process agrees."""
        if label not in self._class_means:
            g = torch.Generator().manual_seed(label)
            z = torch.randn(self.mean_samples, self.generator.z_dim, generator=g).to(self._device)
            labels = torch.full((self.mean_samples,), label, dtype=torch.long, device=self._device)
            w = self.generator.mapping(z, labels)[:, 0]
            w_mean = w.mean(dim=0)
            nearest = (w - w_mean).square().sum(dim=1).argmin()
            self._class_means[label] = (z[nearest].cpu(), w_mean.cpu())
        z, w = self._class_means[label]
        return z.to(self._device), w.to(self._device)

    @torch.no_grad()
    def _init_space(self, labels: torch.Tensor, space: str, method: str,
                    generator: Optional[torch.Generator]) -> Latents:
        labels = labels.to(self._device)
        num_ws = self.generator.num_ws
        if method == "random":
            z = torch.randn(labels.shape[0], self.generator.z_dim, generator=generator).to(self._device)
            if space == "z":
                return {"z": z}
            ws = self.generator.mapping(z, labels, truncation_psi=self.truncation_psi)
        else:
            means = [self.class_mean(int(c)) for c in labels.tolist()]
            if not means:
                raise GenpriorError("class-mean initialisation needs at least one label")
            if space == "z":
                return {"z": torch.stack([z for z, _ in means])}
            w = torch.stack([w for _, w in means])
            ws = w.unsqueeze(1).repeat(1, num_ws, 1)
        if space == "w":
            return {"w": ws[:, 0].clone()}
        if space == "w+":
            return {"w+": ws}
        x, img = self.generator.synthesis.features(ws, self.feature_block, noise_mode=self.noise_mode)
        rest = ws[:, num_ws - self.generator.synthesis.num_ws_after(self.feature_block):]
        return {"F": x, "F_img": img, "w+": rest.clone()}

    # ---- decoding ------------------------------------------------------------------------
    def latent_shapes(self) -> Dict[str, Dict[str, Tuple[int, ...]]]:
        """Per space, the shape of each latent tensor without the batch dimension."""
        g = self.generator
        r = self.feature_block
        return {
            "z": {"z": (g.z_dim,)},
            "w": {"w": (g.w_dim,)},
            "w+": {"w+": (g.num_ws, g.w_dim)},
            "F": {"F": (g.synthesis.channels[r], r, r), "F_img": (g.img_channels, r, r),
                  "w+": (g.synthesis.num_ws_after(r), g.w_dim)},
        }

    def space_of(self, latents: Latents) -> str:
        """The space named by the latent keys; wrong keys or shapes fail with the expected ones."""
        shapes = self.latent_shapes()
        keys = set(latents)
        for space, expected in shapes.items():
            if keys == set(expected):
                for key, shape in expected.items():
                    if tuple(latents[key].shape[1:]) != shape:
                        raise GenpriorError(
                            f"latent {key!r} of space {space!r} must be (N, {', '.join(map(str, shape))}), "
                            f"got {tuple(latents[key].shape)}"
                        )
                return space
        known = "; ".join(f"{space}: {sorted(expected)}" for space, expected in shapes.items())
        raise GenpriorError(f"latent keys {sorted(keys)} name no space of this prior; its spaces take {known}")

    def _decode(self, latents: Latents, labels: torch.Tensor) -> torch.Tensor:
        space = self.space_of(latents)
        synthesis = self.generator.synthesis
        if space == "F":
            img = synthesis.from_features(latents["F"], latents["F_img"], latents["w+"], noise_mode=self.noise_mode)
            return self.from_m11(img)
        if space == "z":
            ws = self.generator.mapping(latents["z"], labels.to(self._device), truncation_psi=self.truncation_psi)
        elif space == "w":
            ws = latents["w"].unsqueeze(1).expand(-1, self.generator.num_ws, -1)
        else:
            ws = latents["w+"]
        return self.from_m11(synthesis(ws, noise_mode=self.noise_mode))

    # ---- saving --------------------------------------------------------------------------
    def _save_components(self, directory: Path) -> None:
        self.generator.save_pretrained(directory / GENERATOR_FOLDER, safe_serialization=True)

    @classmethod
    def from_pretrained(cls, directory, **kwargs: Any) -> "StyleGANPrior":
        """Load a prior directory; ``kwargs`` override the card's feature_block,
        truncation_psi, noise_mode or mean_samples."""
        card = read_card(directory, cls.family)
        options = {k: card[k] for k in ("feature_block", "truncation_psi", "noise_mode", "mean_samples")}
        unknown = set(kwargs) - set(options)
        if unknown:
            raise GenpriorError(
                f"unknown StyleGAN prior option(s) {', '.join(sorted(unknown))}; known: {', '.join(options)}"
            )
        options.update(kwargs)
        generator = load_model(StyleGAN2Generator, Path(directory) / GENERATOR_FOLDER)
        return keep_card_extras(cls(generator, card["mean"], card["std"], **options), card)
