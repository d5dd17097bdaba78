"""The NPU description: shipped devices load, their constraints agree with Vela 5.2's own
report, and every malformed description fails with one line naming file, line and field."""

import textwrap

import pytest

from edgecc.errors import UnknownNameError
from edgecc.targets.npu.description import (
    KNOWN_OPS,
    NpuDescriptionError,
    list_devices,
    load_description_file,
    load_device,
)

SHIPPED = ("ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256", "generic-int8")

MINIMAL = """\
name: my-npu
codegen: c
memory:
  sram_bytes: 65536
  clock_hz: 400000000
quantization:
  activations: {dtype: int8, granularity: per-tensor, zero_point: any}
  weights: {dtype: int8, granularity: per-channel, symmetric: true}
  bias: {dtype: int32, bits: 32}
ops:
  conv2d:
    stride: [1, 2]
    kernel_height: [1, 5]
    channel_multiple: 8
  relu: {}
patterns:
  - {name: conv, root: conv2d, fuse: [bias, relu]}
"""


def write(tmp_path, text, name="my-npu.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_shipped_devices_load():
    assert set(SHIPPED) <= set(list_devices())
    for name in SHIPPED:
        d = load_device(name)
        assert d.name == name
        assert d.codegen == ("c" if name == "generic-int8" else "vela")
        assert d.quantization.activation_dtype == "int8"
        assert d.quantization.weight_granularity == "per-channel" and d.quantization.weight_symmetric
        assert {"conv2d", "depthwise_conv2d", "fully_connected", "add"} <= set(d.ops)
        assert all(p.root in d.ops for p in d.patterns)


def test_user_description_file_loads(tmp_path):
    d = load_device(write(tmp_path, MINIMAL))
    assert d.name == "my-npu" and d.memory.clock_hz == 400_000_000
    conv = d.op("conv2d")
    assert conv.stride.max == 2 and conv.channel_multiple == 8
    assert d.patterns[0].fuse == ("bias", "relu")
    assert conv.check(kernel=(3, 3), stride=(1, 1), channels=(16, 32)) is None
    assert "channel_multiple" in conv.check(kernel=(3, 3), stride=(1, 1), channels=(12,))


def test_ethos_u_op_list_is_vela_5_2s():
    """Every TFLite builtin an Ethos-U description names is one Vela 5.2's Regor supports."""
    from ethosu import regor

    for name, arch in (("ethos-u55-128", "EthosU55"), ("ethos-u65-256", "EthosU55"),
                       ("ethos-u85-256", "EthosU85")):
        supported = set(regor.tflite_operator_constraints(arch))
        for op in load_device(name).ops.values():
            assert op.tflite in supported, (name, op.name, op.tflite)


def test_ethos_u55_limits_are_vela_5_2s_report_text():
    """The numbers in the YAML are the ones in Regor's constraint text for each operator."""
    from ethosu import regor

    text = regor.tflite_operator_constraints("EthosU55")
    d = load_device("ethos-u55-128")
    conv = " ".join(text["CONV_2D"])
    assert f"cannot exceed {d.op('conv2d').weight_abs_sum_max}" in conv
    assert d.op("conv2d").weight_abs_sum_max == 127 * 65536
    assert "Stride>3 is only supported IF (dilation = 1 AND padding = VALID)" in conv
    assert "range (1,3)" in " ".join(text["DEPTHWISE_CONV_2D"])
    assert str(2 ** 40 - 1) in conv and d.quantization.bias_bits == 40
    avg = " ".join(text["AVERAGE_POOL_2D"])
    assert "less than or equal to 8" in avg and d.op("avg_pool2d").same_padding_kernel.max == 8
    assert "65536" in " ".join(text["SOFTMAX"]) and d.op("softmax").ifm_area_max == 65535


def test_check_names_the_constraint_that_refuses():
    conv = load_device("ethos-u55-128").op("conv2d")
    reason = conv.check(kernel=(9, 9), stride=(4, 4), padding="SAME")
    assert reason is not None and "ops.conv2d.stride" in reason and "VALID" in reason
    assert conv.check(kernel=(9, 9), stride=(4, 4), padding="VALID") is None
    assert "weight_abs_sum_max" in conv.check(weight_abs_sum=127 * 65536 + 1)
    generic = load_device("generic-int8").op("conv2d")
    assert "kernel_height" in generic.check(kernel=(9, 9), stride=(1, 1))
    assert "padding" in generic.check(kernel=(3, 3), stride=(1, 1), pads=(4, 1, 1, 1))


def test_unknown_device_suggests_the_closest_name():
    with pytest.raises(UnknownNameError) as e:
        load_device("ethos-u55-12")
    assert "did you mean 'ethos-u55-128'?" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


BAD = {
    # case: (edit of MINIMAL, expected line, expected field, words in the message)
    "unknown-op": (("  relu: {}", "  rellu: {}"), 15, "ops.rellu", "did you mean 'relu'"),
    "min-greater-than-max": (("stride: [1, 2]", "stride: [4, 2]"), 12, "ops.conv2d.stride",
                             "min 4 > max 2"),
    "missing-field": (("  clock_hz: 400000000\n", ""), 3, "memory.clock_hz",
                      "missing required field"),
    "unknown-key": (("channel_multiple: 8", "channel_multipel: 8"), 14,
                    "ops.conv2d.channel_multipel", "did you mean 'channel_multiple'"),
    "bias-bits-contradict-dtype": (("bias: {dtype: int32, bits: 32}",
                                    "bias: {dtype: int32, bits: 40}"), 9,
                                   "quantization.bias.bits", "do not fit"),
    "pattern-root-not-in-ops": (("root: conv2d", "root: depthwise_conv2d"), 17,
                                "patterns[0].root", "not in ops"),
    "kernel-below-floor": (("kernel_height: [1, 5]", "kernel_height: [0, 5]"), 13,
                           "ops.conv2d.kernel_height", "below the minimum 1"),
    "wrong-type": (("sram_bytes: 65536", "sram_bytes: lots"), 4, "memory.sram_bytes",
                   "expected an integer"),
    "unknown-codegen": (("codegen: c", "codegen: velaa"), 2, "codegen", "did you mean 'vela'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_description_is_one_line_with_file_line_field(tmp_path, case):
    (old, new), line, field, words = BAD[case]
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new), name=f"{case}.yaml")
    with pytest.raises(NpuDescriptionError) as e:
        load_device(path)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith(f"{case}.yaml:{line}: {field}: "), msg
    assert words in msg, msg


def test_vela_codegen_needs_vela_section_and_tflite_names(tmp_path):
    text = MINIMAL.replace("codegen: c", "codegen: vela")
    with pytest.raises(NpuDescriptionError, match=r"ops\.conv2d\.tflite: missing"):
        load_description_file(write(tmp_path, text))


def test_not_yaml_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, MINIMAL.replace("  relu: {}", "  relu: {]"))
    with pytest.raises(NpuDescriptionError, match=r"^my-npu\.yaml:15: <yaml>: not valid YAML"):
        load_device(path)


def test_known_ops_cover_every_shipped_op():
    for name in SHIPPED:
        assert set(load_device(name).ops) <= set(KNOWN_OPS)
