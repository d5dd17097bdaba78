"""Vela 5.2 compiles regions edgecc wrote: every op on the NPU, a cycle estimate, a command
stream, and a driver header that a C compiler accepts. Nothing here runs the stream (no Ethos-U
or FVP exists on this machine); what is checked is Vela's own output and its structure."""

import shutil
import subprocess

import numpy as np
import pytest

from edgecc.errors import LoweringError
from edgecc.targets.npu.description import load_device
from edgecc.targets.npu.tflite_writer import write_tflite
from edgecc.targets.npu.vela_compile import RegionOnCpuError, compile_region, driver_header
from tests.targets.npu import regions

pytest.importorskip("ethosu.regor")


@pytest.mark.parametrize("device", ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
                                    "ethos-u85-256"])
def test_block_region_compiles_entirely_on_the_npu(device):
    region = regions.block(np.random.default_rng(0))
    result = compile_region(write_tflite(region), load_device(device))
    perf = result.performance
    assert result.cpu_operators == () and perf["cpu_ops"] == 0 and perf["npu_ops"] >= 1
    assert perf["npu_cycles"] > 0 and perf["latency_s"] > 0
    # Vela counts the MACs of the same ops (plus the pooling's adds): within 2 % of ours
    assert abs(perf["macs"] - region.macs()) <= 0.02 * region.macs()
    assert 0 < perf["mac_utilisation"] <= 1
    assert perf["original_weights_bytes"] > 0 and perf["encoded_weights_bytes"] > 0
    assert any(m["peak_bytes"] > 0 for m in perf["memories"].values())
    assert result.command_stream[:4] == b"COP1" and len(result.command_stream) % 4 == 0
    assert len(result.read_only) > 0
    assert [t.size for t in result.inputs] == [16 * 16 * 8]
    assert [t.size for t in result.outputs] == [10]
    assert result.optimised_tflite[4:8] == b"TFL3"


def test_more_macs_per_cycle_take_fewer_cycles():
    region = regions.conv(np.random.default_rng(1))
    tflite = write_tflite(region)
    cycles = {d: compile_region(tflite, load_device(d)).performance["npu_cycles"]
              for d in ("ethos-u55-128", "ethos-u55-256")}
    assert cycles["ethos-u55-256"] < cycles["ethos-u55-128"]


def test_operator_vela_leaves_on_the_cpu_is_an_error_with_vela_reason():
    region = regions.conv(np.random.default_rng(0), stride=4, kernel=9, padding="SAME")
    desc = load_device("ethos-u55-128")
    with pytest.raises(RegionOnCpuError) as e:
        compile_region(write_tflite(region), desc)
    assert "CONV_2D" in str(e.value).upper() and "stride" in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    # and the description refuses the same op, naming its constraint
    assert "ops.conv2d.stride" in desc.op("conv2d").check(kernel=(9, 9), stride=(4, 4),
                                                          padding="SAME")
    kept = compile_region(write_tflite(region), desc, require_npu=False)
    assert len(kept.cpu_operators) == 1 and kept.command_stream == b""


def test_description_and_vela_agree_on_which_ops_fit():
    """The U55 description's check() and Vela's placement agree on edge cases either side
    of the report's limits."""
    desc = load_device("ethos-u55-128")
    rng = np.random.default_rng(3)
    cases = [
        ("conv2d", regions.conv(rng, stride=4, kernel=9, padding="VALID"),
         dict(kernel=(9, 9), stride=(4, 4), padding="VALID")),
        ("conv2d", regions.conv(rng, stride=4, kernel=9, padding="SAME"),
         dict(kernel=(9, 9), stride=(4, 4), padding="SAME")),
        ("avg_pool2d", regions.pool(rng, padding="SAME", kernel=9, stride=1),
         dict(kernel=(9, 9), stride=(1, 1), padding="SAME")),
        ("avg_pool2d", regions.pool(rng, padding="SAME", kernel=3, stride=1),
         dict(kernel=(3, 3), stride=(1, 1), padding="SAME")),
        ("depthwise_conv2d", regions.depthwise(rng, stride=3, padding="VALID"),
         dict(kernel=(3, 3), stride=(3, 3), padding="VALID")),
    ]
    for op, region, attrs in cases:
        ours = desc.op(op).check(**attrs) is None
        vela = compile_region(write_tflite(region), desc, require_npu=False).cpu_operators == ()
        assert ours == vela, (op, attrs, ours, vela)


def test_generic_int8_is_not_compiled_by_vela():
    region = regions.conv(np.random.default_rng(0))
    with pytest.raises(LoweringError, match="codegen 'c'"):
        compile_region(write_tflite(region), load_device("generic-int8"))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")
def test_driver_header_compiles_against_the_driver_api(tmp_path):
    result = compile_region(write_tflite(regions.block(np.random.default_rng(0))),
                            load_device("ethos-u55-128"))
    header = driver_header(result, "block-0")
    assert "ethosu_invoke_v3(drv, block_0_cms" in header
    assert f"block_0_cms[{len(result.command_stream)}]" in header
    # the driver's declaration (ethos-u-core-driver include/ethosu_driver.h)
    (tmp_path / "ethosu_driver.h").write_text(
        "#include <stddef.h>\n#include <stdint.h>\nstruct ethosu_driver;\n"
        "int ethosu_invoke_v3(struct ethosu_driver *drv, const void *custom_data_ptr,\n"
        "  const int custom_data_size, uint64_t *const base_addr,\n"
        "  const size_t *base_addr_size, const int num_base_addr, void *user_arg);\n")
    (tmp_path / "block_0.h").write_text(header)
    (tmp_path / "main.c").write_text(
        '#include "block_0.h"\n'
        "static uint8_t scratch[BLOCK_0_SCRATCH_SIZE + 1], fast[BLOCK_0_SCRATCH_FAST_SIZE + 1];\n"
        "int run(struct ethosu_driver* d, const int8_t* x, int8_t* y) {\n"
        "  return block_0_invoke(d, scratch, fast, x, y);\n}\n")
    r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", "-fsyntax-only", "-I",
                        str(tmp_path), str(tmp_path / "main.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the command stream bytes in the header are the stream Vela produced
    body = header.split(f"block_0_cms[{len(result.command_stream)}] = {{", 1)[1].split("};")[0]
    assert bytes(int(b, 16) for b in body.replace("\n", "").split(",")) == result.command_stream


@pytest.mark.parametrize("device", ["ethos-u55-128", "ethos-u85-256"])
@pytest.mark.parametrize("case", ["batch_matmul", "flatten", "slice_concat", "softmax", "mean",
                                  "activations"])
def test_attention_and_data_movement_regions_compile_on_the_npu(device, case):
    """BATCH_MATMUL (attention), MAX_POOL_2D + TRANSPOSE + RESHAPE + QUANTIZE (a CNN's
    flatten), STRIDED_SLICE + CONCATENATION, SOFTMAX and the table activations (HARD_SWISH,
    LEAKY_RELU, GELU, TANH, LOGISTIC) as edgecc writes them: Vela 5.2 keeps
    none on the CPU (BATCH_MATMUL included on U55: its report lists it for U55/U65 too)."""
    region = getattr(regions, case)(np.random.default_rng(0))
    result = compile_region(write_tflite(region), load_device(device))
    assert result.cpu_operators == () and result.performance["cpu_ops"] == 0
    assert result.performance["npu_cycles"] > 0


def test_softmax_tflite_runs_in_litert_within_one_step_of_float_softmax():
    """The SOFTMAX edgecc writes is what TFLite means by it: LiteRT's reference kernel on the
    file gives float softmax of the dequantized input to within one output step (1/256)."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    rng = np.random.default_rng(0)
    region = regions.softmax(rng)
    it = litert.Interpreter(model_content=write_tflite(region),
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    x = rng.integers(-128, 128, (1, 4, 16), dtype=np.int8)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    got = (it.get_tensor(it.get_output_details()[0]["index"]).astype(np.float64) + 128) / 256
    q = region.tensors["x"].quant
    real = (x.astype(np.float64) - q.zero_point[0]) * q.scale[0]
    ref = np.exp(real - real.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.abs(got - ref).max() <= 1 / 256 + 1e-9


@pytest.mark.parametrize("device", ["ethos-u55-128", "ethos-u85-256"])
@pytest.mark.parametrize("kind", ["logistic", "tanh", "hard_swish", "leaky_relu", "gelu"])
def test_velas_activation_table_is_the_simulators(device, kind):
    """For a one-op table activation, Vela's read-only data (what the NPU's LUT is loaded
    from) is the simulator's 256-entry table byte for byte, indexed by x + 128: the table the
    NPU applies is the one checked against LiteRT on every code (test_simulator.py)."""
    from edgecc.targets.npu.region import RegionBuilder
    from edgecc.targets.npu.simulator import lut_table

    rng = np.random.default_rng(4)
    for _ in range(2):
        b = RegionBuilder(kind)
        x = b.input("x", (1, 4, 4, 16), rng.uniform(0.01, 0.1), int(rng.integers(-20, 21)))
        fixed = kind in ("logistic", "tanh")
        y = b.lut(x, kind, None if fixed else rng.uniform(0.01, 0.1),
                  None if fixed else int(rng.integers(-20, 21)),
                  **({"alpha": rng.uniform(0, 0.5)} if kind == "leaky_relu" else {}))
        region = b.build([y])
        result = compile_region(write_tflite(region), load_device(device))
        table = lut_table(region.ops[0], region.tensors[x], region.tensors[y])
        assert bytes(result.read_only) == table.tobytes()


@pytest.mark.parametrize("device", ["ethos-u55-128", "ethos-u85-256"])
def test_velas_softmax_exp_table_is_the_simulators(device):
    """Vela's int8 SOFTMAX loads the exp of every int8 difference (x - max) as 256 Q0.31
    values: they are the simulator's (TFLite's gemmlowp ``exp_on_negative_values``), byte for
    byte, at input scales below and above the multiplier cap. The rest of Vela's softmax (its
    reciprocal as NPU element-wise ops) is not executed here."""
    from edgecc.targets.npu.region import RegionBuilder
    from edgecc.targets.npu.simulator import softmax_exp_table

    for scale, zp in ((0.1, 3), (0.02, -7), (3.0, 0)):
        b = RegionBuilder("softmax")
        x = b.input("x", (1, 4, 16), scale, zp)
        region = b.build([b.softmax(x)])
        result = compile_region(write_tflite(region), load_device(device))
        assert softmax_exp_table(region.tensors[x]).tobytes() in bytes(result.read_only)
