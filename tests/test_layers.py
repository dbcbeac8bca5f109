"""pixelwise.layers against the lecture notes' worked examples (exact values) and PyTorch's own operators."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelwise.layers import (
    bilinear_conv_transpose2d,
    bilinear_kernel,
    conv_matrix_1d,
    conv_transpose_via_matrix,
    GemmConv2d,
    fractionally_strided_conv2d,
    linear_to_conv2d,
    max_unpool2d,
    receptive_field,
    stacked_3x3,
    unpool_bed_of_nails,
    unpool_nearest,
)

# Seed 001, "Transpose Convolution and Bilinear Interpolation": 4×4 input 0..15, bilinear 3×3 kernel, stride 2.
# Checked by hand (sum of value × kernel pasted at (2i, 2j)): every entry agrees with the seed's complete table.
# The seed labels this 9×9 table "padding=1", but 9 = (4-1)·2 + 3 is the padding-0 size; padding 1 gives its
# 7×7 centre. Its last copy also has two extraction typos: row 0 col 5 reads "4" (true value 1) and row 4 col 8
# reads "4 .5" (4.5). Its first copy's rows 4-6 are a partial sum from the animation, not the result.
SEED001_TABLE = [
    [0, 0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 0.75],
    [0, 0, 0.5, 1, 1.5, 2, 2.5, 3, 1.5],
    [1, 2, 2.5, 3, 3.5, 4, 4.5, 5, 2.5],
    [2, 4, 4.5, 5, 5.5, 6, 6.5, 7, 3.5],
    [3, 6, 6.5, 7, 7.5, 8, 8.5, 9, 4.5],
    [4, 8, 8.5, 9, 9.5, 10, 10.5, 11, 5.5],
    [5, 10, 10.5, 11, 11.5, 12, 12.5, 13, 6.5],
    [6, 12, 12.5, 13, 13.5, 14, 14.5, 15, 7.5],
    [3, 6, 6.25, 6.5, 6.75, 7, 7.25, 7.5, 3.75],
]


def _as_nchw(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def _ramp4() -> torch.Tensor:
    return torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)


# ---- bilinear kernel -------------------------------------------------------------------------------------------


def test_bilinear_kernel_exact_values():
    assert torch.equal(bilinear_kernel(3), torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]))
    ramp = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.equal(bilinear_kernel(4), torch.outer(ramp, ramp))
    assert bilinear_kernel(4, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="kernel_size"):
        bilinear_kernel(0)


# ---- seed 001: transposed conv with the bilinear kernel ---------------------------------------------------------


def test_seed001_transposed_conv_padding0_table():
    weight = bilinear_kernel(3)[None, None]
    out = F.conv_transpose2d(_ramp4(), weight, stride=2, padding=0)
    assert torch.equal(out, _as_nchw(SEED001_TABLE))


def test_seed001_padding1_is_centre_crop():
    expected = _as_nchw(SEED001_TABLE)[..., 1:8, 1:8]
    weight = bilinear_kernel(3)[None, None]
    assert torch.equal(F.conv_transpose2d(_ramp4(), weight, stride=2, padding=1), expected)

    layer = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
        assert torch.equal(layer(_ramp4()), expected)
    assert torch.equal(fractionally_strided_conv2d(_ramp4(), weight, stride=2, padding=1), expected)


def test_seed001_is_bilinear_interpolation():
    # "This result is equivalent to bilinear interpolation": the padding-1 crop samples the 4×4 grid at
    # half-pixel steps from pixel centre to pixel centre, i.e. align_corners=True resizing to 7×7.
    x = _ramp4()
    crop = _as_nchw(SEED001_TABLE)[..., 1:8, 1:8]
    assert torch.equal(crop, F.interpolate(x, size=(7, 7), mode="bilinear", align_corners=True))
    # And by hand: odd positions copy input pixels, even ones average their neighbours.
    assert torch.equal(crop[..., ::2, ::2], x)
    assert torch.equal(crop[..., ::2, 1::2], (x[..., :, :-1] + x[..., :, 1:]) / 2)
    assert torch.equal(crop[..., 1::2, ::2], (x[..., :-1, :] + x[..., 1:, :]) / 2)


# ---- seed 000: the 2×2 worked example ---------------------------------------------------------------------------


def test_seed000_transposed_conv_2x2():
    x = _as_nchw([[0, 1], [2, 3]])
    out = F.conv_transpose2d(x, x, stride=2)
    expected = _as_nchw([[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]])
    assert torch.equal(out, expected)
    assert torch.equal(fractionally_strided_conv2d(x, x, stride=2), expected)


# ---- seed 003: convolution as a matrix --------------------------------------------------------------------------


def test_seed003_conv_matrix_stride2_padding1():
    x, y, z = 2.0, 3.0, 5.0
    a, b, c, d = 7.0, 11.0, 13.0, 17.0
    kernel = torch.tensor([x, y, z])
    X = conv_matrix_1d(kernel, 4, stride=2, padding=1)
    # The seed's [[x,y,z,0,0,0],[0,0,x,y,z,0]] acts on (0,a,b,c,d,0); dropping the two padding columns
    # (first and last) leaves row 2 as [0,x,y,z] (it multiplies b, c, d), not [x,y,z,0].
    assert torch.equal(X, torch.tensor([[y, z, 0, 0], [0, x, y, z]]))
    vec = torch.tensor([a, b, c, d])
    assert torch.equal(X @ vec, torch.tensor([a * y + b * z, b * x + c * y + d * z]))
    assert torch.equal(X @ vec, F.conv1d(vec[None, None], kernel[None, None], stride=2, padding=1)[0, 0])

    v = torch.tensor([19.0, 23.0])
    # Length 4 needs output_padding=1: (2-1)·2 - 2 + 3 = 3 is what conv_transpose1d picks on its own.
    expected = F.conv_transpose1d(v[None, None], kernel[None, None], stride=2, padding=1, output_padding=1)[0, 0]
    assert torch.equal(X.T @ v, expected)
    assert torch.equal(conv_transpose_via_matrix(v, kernel, 4, stride=2, padding=1), expected)


def test_seed003_transposed_conv_matrix_padding0():
    # The seed's X^T (6×2) for a length-6 input, k=3, stride 2, padding 0, times (a, b) gives
    # (ax, ay, az+bx, by, bz, 0). The seed writes the vector as (a, b, c, d, 0) — a typo: X^T has 2 columns.
    x, y, z, a, b = 2.0, 3.0, 5.0, 7.0, 11.0
    kernel = torch.tensor([x, y, z])
    X = conv_matrix_1d(kernel, 6, stride=2, padding=0)
    assert torch.equal(X, torch.tensor([[x, y, z, 0, 0, 0], [0, 0, x, y, z, 0]]))
    ab = torch.tensor([a, b])
    assert torch.equal(X.T @ ab, torch.tensor([a * x, a * y, a * z + b * x, b * y, b * z, 0]))
    ref = F.conv_transpose1d(ab[None, None], kernel[None, None], stride=2, output_padding=1)
    assert torch.equal(X.T @ ab, ref[0, 0])


@pytest.mark.parametrize("stride,padding,length", [(1, 0, 5), (1, 1, 5), (2, 0, 7), (2, 1, 8), (3, 2, 9)])
def test_conv_matrix_matches_torch(stride, padding, length):
    g = torch.Generator().manual_seed(stride * 10 + padding)
    kernel = torch.randint(-4, 5, (3,), generator=g).float()
    a = torch.randint(-9, 10, (length,), generator=g).float()
    X = conv_matrix_1d(kernel, length, stride, padding)
    assert torch.equal(X @ a, F.conv1d(a[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0])
    v = torch.randint(-9, 10, (X.shape[0],), generator=g).float()
    op = length - ((X.shape[0] - 1) * stride - 2 * padding + 3)
    ref = F.conv_transpose1d(v[None, None], kernel[None, None], stride=stride, padding=padding, output_padding=op)
    assert torch.equal(X.T @ v, ref[0, 0])


def test_conv_matrix_errors():
    with pytest.raises(ValueError, match="1-D"):
        conv_matrix_1d(torch.ones(3, 3), 4)
    with pytest.raises(ValueError, match="does not fit"):
        conv_matrix_1d(torch.ones(5), 3)
    with pytest.raises(ValueError, match="stride"):
        conv_matrix_1d(torch.ones(3), 4, stride=0)
    with pytest.raises(ValueError, match="shape"):
        conv_transpose_via_matrix(torch.ones(3), torch.ones(3), 4, stride=2, padding=1)


# ---- fractionally strided == transposed (the lecture's homework) -------------------------------------------------


@pytest.mark.parametrize("c_in,c_out", [(1, 1), (2, 3)])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_fractionally_strided_equals_conv_transpose(c_in, c_out, stride, padding):
    g = torch.Generator().manual_seed(100 * stride + 10 * padding + c_in)
    # Integer values keep every sum exact, and a random kernel is not symmetric, so a missing flip would show.
    x = torch.randint(-5, 6, (2, c_in, 4, 5), generator=g).float()
    weight = torch.randint(-5, 6, (c_in, c_out, 3, 3), generator=g).float()
    ours = fractionally_strided_conv2d(x, weight, stride, padding)
    assert torch.equal(ours, F.conv_transpose2d(x, weight, stride=stride, padding=padding))


def test_fractionally_strided_padding_beyond_kernel_and_errors():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(2, 1, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(fractionally_strided_conv2d(x, w, 2, 2), F.conv_transpose2d(x, w, stride=2, padding=2))
    with pytest.raises(ValueError, match="channels"):
        fractionally_strided_conv2d(torch.ones(1, 3, 4, 4), torch.ones(2, 1, 3, 3), 2)
    with pytest.raises(ValueError, match="stride"):
        fractionally_strided_conv2d(torch.ones(1, 2, 4, 4), torch.ones(2, 1, 3, 3), 0)
    with pytest.raises(ValueError, match="padding"):
        fractionally_strided_conv2d(torch.ones(1, 2, 4, 4), torch.ones(2, 1, 3, 3), 1, -1)


# ---- the FCN bilinear layer -------------------------------------------------------------------------------------


def test_bilinear_layer_scale2_geometry_and_weights():
    layer = bilinear_conv_transpose2d(3, 2)
    assert (layer.kernel_size, layer.stride, layer.padding, layer.bias) == ((4, 4), (2, 2), (1, 1), None)
    assert layer.weight.requires_grad
    assert torch.equal(layer.weight[1, 1], bilinear_kernel(4))
    assert layer.weight[0, 1].abs().sum() == 0
    assert not bilinear_conv_transpose2d(2, 2, learnable=False).weight.requires_grad


def test_bilinear_layer_scale2_matches_interpolate_interior():
    # Ramp along x, a different integer image per channel: dyadic weights on integers → exact equality.
    ramp = torch.arange(6, dtype=torch.float32).repeat(6, 1)
    noise = torch.randint(0, 9, (6, 6), generator=torch.Generator().manual_seed(0)).float()
    x = torch.stack([ramp, ramp.T * 3, noise])[None]
    with torch.no_grad():
        out = bilinear_conv_transpose2d(3, 2)(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert out.shape == (1, 3, 12, 12)
    # Only the outermost ring differs: there the layer blends with zero padding, interpolate clamps.
    assert torch.equal(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])
    assert not torch.equal(out, ref)


@pytest.mark.parametrize("scale", [1, 3, 4])
def test_bilinear_layer_other_scales(scale):
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(scale))
    with torch.no_grad():
        out = bilinear_conv_transpose2d(2, scale)(x)
    ref = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    assert out.shape == (1, 2, 5 * scale, 5 * scale)
    b = scale  # a border of one input pixel's worth is affected by the zero padding
    torch.testing.assert_close(out[..., b:-b, b:-b], ref[..., b:-b, b:-b])


def test_bilinear_layer_errors():
    with pytest.raises(ValueError, match="scale_factor"):
        bilinear_conv_transpose2d(3, 0)
    with pytest.raises(ValueError, match="channels"):
        bilinear_conv_transpose2d(0, 2)


# ---- seed 003: unpooling ----------------------------------------------------------------------------------------


def test_unpool_nearest_and_bed_of_nails():
    x = _as_nchw([[1, 2], [3, 4]])
    assert torch.equal(unpool_nearest(x), _as_nchw([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]))
    assert torch.equal(unpool_bed_of_nails(x), _as_nchw([[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]))
    assert unpool_nearest(x, 3).shape == (1, 1, 6, 6)
    with pytest.raises(ValueError, match="scale"):
        unpool_bed_of_nails(x, 0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        unpool_nearest(x[0])


def test_max_unpool_returns_values_to_argmax():
    x = _as_nchw([[1, 6, 3, 2], [5, 2, 1, 8], [7, 3, 4, 0], [1, 2, 9, 6]])
    pooled, indices = nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(pooled, _as_nchw([[6, 8], [7, 9]]))
    expected = _as_nchw([[0, 6, 0, 0], [0, 0, 0, 8], [7, 0, 0, 0], [0, 0, 9, 0]])
    assert torch.equal(max_unpool2d(pooled, indices), expected)
    # Odd input size: the decoder must be told the size the encoder saw.
    odd = torch.arange(25.0).view(1, 1, 5, 5)
    p, i = nn.MaxPool2d(2, return_indices=True)(odd)
    assert max_unpool2d(p, i, output_size=(5, 5)).shape == (1, 1, 5, 5)
    with pytest.raises(ValueError, match="indices"):
        max_unpool2d(pooled, indices[..., :1])


# ---- seed 004: convolutionalization -----------------------------------------------------------------------------


def test_linear_4096_to_1000_is_1x1_conv():
    torch.manual_seed(0)
    linear = nn.Linear(4096, 1000)
    conv = linear_to_conv2d(linear, 4096, 1)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (4096, 1000, (1, 1))
    with torch.no_grad():
        x = torch.randn(2, 4096, 1, 1)
        torch.testing.assert_close(conv(x)[:, :, 0, 0], linear(x.flatten(1)))
        # On a larger map the conv applies the classifier at every position: a 3×3 score map.
        big = torch.randn(1, 4096, 3, 3)
        scores = conv(big)
        assert scores.shape == (1, 1000, 3, 3)
        per_position = linear(big[0].permute(1, 2, 0))  # (3, 3, 1000)
        torch.testing.assert_close(scores[0].permute(1, 2, 0), per_position)


def test_vgg_fc6_structure_is_7x7_conv():
    # VGG-16's fc6 is Linear(512·7·7, 4096); 64 outputs instead of 4096 keep the test light (same structure).
    torch.manual_seed(0)
    linear = nn.Linear(512 * 7 * 7, 64)
    conv = linear_to_conv2d(linear, 512, 7)
    assert conv.kernel_size == (7, 7)
    with torch.no_grad():
        x = torch.randn(2, 512, 7, 7)
        torch.testing.assert_close(conv(x).flatten(1), linear(x.flatten(1)), rtol=1e-4, atol=1e-4)


def test_linear_to_conv_without_bias_and_errors():
    linear = nn.Linear(2 * 3 * 4, 5, bias=False)
    conv = linear_to_conv2d(linear, 2, (3, 4))
    assert conv.bias is None
    x = torch.randn(1, 2, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(conv(x).flatten(1), linear(x.flatten(1)))
    with pytest.raises(ValueError, match="4096.*512.*7.*7.*25088"):
        linear_to_conv2d(nn.Linear(4096, 8), 512, 7)


@pytest.mark.parametrize(
    "kwargs, size",
    [
        ({"kernel_size": 7, "padding": 3}, (4, 5)),  # FCN's fc6 on a pool5 smaller than its kernel
        ({"kernel_size": 7, "padding": 12, "dilation": 4}, (15, 20)),  # the dilated front-end's fc6
        ({"kernel_size": (3, 5), "stride": 2, "padding": (1, 0), "dilation": (2, 1)}, (11, 13)),
        ({"kernel_size": 1, "bias": False}, (3, 2)),
    ],
)
def test_gemm_conv2d_matches_conv2d_values_and_gradients(kwargs, size):
    torch.manual_seed(0)
    gemm = GemmConv2d(6, 5, **kwargs)
    ref = nn.Conv2d(6, 5, **kwargs)
    ref.load_state_dict(gemm.state_dict())  # same keys and shapes: checkpoints move between the two
    x = torch.randn(3, 6, *size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = gemm(x), ref(x_ref)
    assert out.shape == out_ref.shape and out.is_contiguous()
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gemm.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    if ref.bias is not None:
        torch.testing.assert_close(gemm.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_gemm_conv2d_in_channels_last_reads_the_weight_in_place():
    """After ``.to(memory_format=torch.channels_last)`` (what ``channels_last=true`` does to a model) the matmul path
    gives nn.Conv2d's values and gradients without copying the weight: flattening a channels_last weight copies it,
    411 MB a step for FCN's fc6, and its gradient would be copied back into the weight's layout."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    gemm = GemmConv2d(6, 5, (3, 2), padding=(1, 0), dilation=(2, 1))
    ref = nn.Conv2d(6, 5, (3, 2), padding=(1, 0), dilation=(2, 1))
    ref.load_state_dict(gemm.state_dict())
    gemm = gemm.to(memory_format=torch.channels_last)
    assert not gemm.weight.is_contiguous()
    x = torch.randn(3, 6, 7, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    x_ref = x.detach().contiguous().requires_grad_()
    grad = torch.randn(3, 5, 5, 8)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        out = gemm(x)
        out.backward(grad)
    weight_copies = [e.name for e in prof.events() if e.name in ("aten::copy_", "aten::clone", "aten::contiguous")
                     and e.input_shapes and list(e.input_shapes[0]) == list(gemm.weight.shape)]
    assert weight_copies == []
    out_ref = ref(x_ref)
    out_ref.backward(grad)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gemm.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gemm.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    assert gemm.weight.grad.is_contiguous(memory_format=torch.channels_last)


def test_gemm_conv2d_takes_the_matmul_path_only_when_training_on_cpu(monkeypatch):
    import pixelwise.layers.convolutionalize as module

    calls = []
    real_unfold = F.unfold
    monkeypatch.setattr(module.F, "unfold", lambda *a, **k: calls.append(1) or real_unfold(*a, **k))
    conv = GemmConv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 6, 6)
    conv(x)
    assert calls == [1]
    with torch.no_grad():
        conv(x)
    conv.requires_grad_(False)
    conv(x)
    assert calls == [1]  # inference runs nn.Conv2d's own convolution
    # Under CPU bf16 autocast the dtype matches nn.Conv2d's.
    conv.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == nn.Conv2d.forward(conv, x).dtype == torch.bfloat16
    # A kernel larger than the padded input raises nn.Conv2d's error, not a reshape error.
    with pytest.raises(RuntimeError, match="[Kk]ernel size"):
        GemmConv2d(4, 8, 7)(torch.randn(1, 4, 3, 3))


def test_linear_to_conv_gradients_equal_the_linear_layer():
    # Training goes through GemmConv2d's matmul path; on a kh x kw input it is the Linear layer, gradients included.
    torch.manual_seed(0)
    linear = nn.Linear(3 * 2 * 2, 4)
    conv = linear_to_conv2d(linear, 3, 2)
    assert isinstance(conv, GemmConv2d) and isinstance(conv, nn.Conv2d)
    x = torch.randn(5, 3, 2, 2)
    conv(x).flatten(1).square().sum().backward()
    linear(x.flatten(1)).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad.flatten(1), linear.weight.grad)
    torch.testing.assert_close(conv.bias.grad, linear.bias.grad)


# ---- receptive field --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_stacked_3x3(n):
    assert stacked_3x3(n) == 2 * n + 1


def test_receptive_field_by_hand():
    # 3×3/2 then 3×3/1: the second layer's 3 taps sit 2 input pixels apart → 2·2 + 3 = 7.
    assert receptive_field([(3, 2, 1), (3, 1, 1)]) == 7
    # conv3×3, pool 2×2/2, conv3×3: 1 + 2 + 1 + 2·2 = 8.
    assert receptive_field([(3, 1, 1), (2, 2, 1), (3, 1, 1)]) == 8
    assert receptive_field([(3, 1, 2)]) == 5  # dilation 2: taps at -2, 0, +2
    assert receptive_field([]) == 1
    with pytest.raises(ValueError, match="stride"):
        receptive_field([(3, 0, 1)])


def test_receptive_field_matches_gradient_support():
    layers = [(3, 2, 1), (3, 1, 2), (2, 2, 1), (3, 1, 1)]
    convs = [nn.Conv1d(1, 1, k, stride=s, dilation=d, bias=False) for k, s, d in layers]
    for c in convs:
        nn.init.constant_(c.weight, 1.0)
    x = torch.zeros(1, 1, 64, requires_grad=True)
    out = nn.Sequential(*convs)(x)
    out[0, 0, out.shape[-1] // 2].backward()
    support = (x.grad[0, 0] != 0).nonzero().flatten()
    assert support.max() - support.min() + 1 == receptive_field(layers)
