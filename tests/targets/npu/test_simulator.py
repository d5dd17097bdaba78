"""The integer simulator against an independent executor: LiteRT's reference int8 kernels
running the .tflite that tflite_writer.py wrote for the same region. Bit-exact, no tolerance."""

import numpy as np
import pytest

from edgecc.targets.npu import simulator
from edgecc.targets.npu.simulator import simulate
from edgecc.targets.npu.tflite_writer import write_tflite
from tests.targets.npu import regions

litert = pytest.importorskip("ai_edge_litert.interpreter")

CASES = {
    "conv-same-relu": lambda r: regions.conv(r),
    "conv-valid-stride2": lambda r: regions.conv(r, stride=2, padding="VALID", activation="NONE"),
    "conv-same-stride2-5x5": lambda r: regions.conv(r, stride=2, kernel=5, activation="RELU6"),
    "conv-dilation2": lambda r: regions.conv(r, dilation=2),
    "conv-1x1": lambda r: regions.conv(r, kernel=1),
    "depthwise-same-relu6": lambda r: regions.depthwise(r),
    "depthwise-stride2-valid": lambda r: regions.depthwise(r, stride=2, padding="VALID"),
    "depthwise-multiplier2": lambda r: regions.depthwise(r, multiplier=2, activation="NONE"),
    "fc": lambda r: regions.fully_connected(r),
    "fc-relu": lambda r: regions.fully_connected(r, activation="RELU"),
    "batch-matmul": lambda r: regions.batch_matmul(r),
    "batch-matmul-long-k": lambda r: regions.batch_matmul(r, batch=2, m=3, k=64, n=7),
    "maxpool-transpose-flatten-requantize": lambda r: regions.flatten(r),
    "strided-slice-transpose-concat": lambda r: regions.slice_concat(r),
    "mean": lambda r: regions.mean(r),
    "mean-keep-dims": lambda r: regions.mean(r, keep_dims=True),
    "add": lambda r: regions.add(r),
    "add-relu": lambda r: regions.add(r, activation="RELU"),
    "mul": lambda r: regions.mul(r),
    "avgpool-valid": lambda r: regions.pool(r),
    "avgpool-same-3x3": lambda r: regions.pool(r, padding="SAME", kernel=3, stride=2),
    "maxpool-valid": lambda r: regions.pool(r, kind="max_pool2d"),
    "maxpool-same-3x3": lambda r: regions.pool(r, kind="max_pool2d", padding="SAME", kernel=3,
                                                 stride=1),
    "mobilenet-block": lambda r: regions.block(r),
    "conv-table-activations": lambda r: regions.activations(r),
    "softmax": lambda r: regions.softmax(r, shape=(2, 5, 33)),
}


def litert_run(tflite: bytes, inputs: dict) -> list[np.ndarray]:
    it = litert.Interpreter(model_content=tflite,
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], inputs[d["name"]])
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_simulator_equals_litert_reference_kernels(case):
    mismatched = total = 0
    for seed in range(4):  # fresh weights, scales, zero points and inputs per seed
        rng = np.random.default_rng(seed)
        region = CASES[case](rng)
        tflite = write_tflite(region)
        for _ in range(2):
            inputs = regions.random_inputs(region, rng)
            (ref,) = litert_run(tflite, inputs)
            # LiteRT's reference FULLY_CONNECTED rounds once (simulator.py's docstring)
            (sim,) = simulate(region, inputs, fully_connected_rounding="single").values()
            assert sim.dtype == np.int8 and ref.shape == sim.shape
            mismatched += int((ref != sim).sum())
            total += ref.size
    assert mismatched == 0, f"{case}: {mismatched}/{total} int8 outputs differ from LiteRT"


@pytest.mark.parametrize("kind", ["logistic", "tanh", "hard_swish", "leaky_relu", "gelu"])
def test_table_activations_equal_litert_on_every_int8_code(kind):
    """All 256 input codes, at 40 random input (and output) quantizations per kind: the
    simulator's table is LiteRT's int8 kernel, bit for bit."""
    from edgecc.targets.npu.region import RegionBuilder

    rng = np.random.default_rng(7)
    codes = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    mismatched, distinct = 0, []
    for i in range(40):
        b = RegionBuilder(kind)
        x = b.input("x", (1, 256), rng.uniform(0.003, 0.3), int(rng.integers(-60, 61)))
        fixed = kind in ("logistic", "tanh")
        kw = ({"alpha": rng.uniform(0.0, 0.9)} if kind == "leaky_relu" else
              {"approximate": bool(i % 2)} if kind == "gelu" else {})
        y = b.lut(x, kind, None if fixed else rng.uniform(0.003, 0.3),
                  None if fixed else int(rng.integers(-60, 61)), **kw)
        region = b.build([y])
        (ref,) = litert_run(write_tflite(region), {"x": codes})
        sim = simulate(region, {"x": codes})[y]
        mismatched += int((ref != sim).sum())
        distinct.append(len(np.unique(sim)))
    assert np.median(distinct) > 8  # the quantizations span the functions, not a few codes
    assert mismatched == 0, f"{kind}: {mismatched}/{40 * 256} codes differ from LiteRT"


def test_softmax_equals_litert_across_scales_and_row_lengths():
    """TFLite's int8 softmax reference arithmetic (gemmlowp exp, Newton-Raphson reciprocal):
    60 random input scales (0.005 .. 4, large ones hit the capped multiplier) and row
    lengths 2 .. 200, bit-exact with LiteRT."""
    from edgecc.targets.npu.region import RegionBuilder

    rng = np.random.default_rng(3)
    mismatched = total = 0
    for i in range(60):
        n = int(rng.integers(2, 201))
        b = RegionBuilder("softmax")
        x = b.input("x", (3, 2, n), rng.uniform(0.005, 0.5) if i % 3 else rng.uniform(0.5, 4),
                    int(rng.integers(-40, 41)))
        region = b.build([b.softmax(x)])
        xs = {"x": rng.integers(-128, 128, (3, 2, n), dtype=np.int8)}
        (ref,) = litert_run(write_tflite(region), xs)
        (sim,) = simulate(region, xs).values()
        mismatched += int((ref != sim).sum())
        total += ref.size
    assert mismatched == 0, f"{mismatched}/{total} softmax outputs differ from LiteRT"


def test_fully_connected_roundings_differ_by_at_most_one_lsb():
    """Vela's NPU mode (double rounding) vs LiteRT's FC (single): rare 1-LSB differences."""
    differ = total = 0
    for seed in range(50):
        rng = np.random.default_rng(seed)
        region = regions.fully_connected(rng)
        inputs = regions.random_inputs(region, rng)
        (a,) = simulate(region, inputs, fully_connected_rounding="double").values()
        (b,) = simulate(region, inputs, fully_connected_rounding="single").values()
        assert np.abs(a.astype(int) - b).max() <= 1
        differ += int((a != b).sum())
        total += a.size
    assert differ < total * 0.01


def test_quantize_multiplier_matches_tflite_frexp():
    # TFLite QuantizeMultiplier: q = round(frac * 2^31) (half away), shift = exponent
    for real in (0.5, 0.75, 1.0, 3.0e-5, 0.0123456, 1.9999999999, 2.5, 0.9999999999):
        frac, exp = np.frexp(real)
        q = int(np.floor(frac * 2.0 ** 31 + 0.5))
        if q == 1 << 31:
            q, exp = q // 2, exp + 1
        assert simulator.quantize_multiplier(real) == (q, exp)


def test_fixed_point_primitives_match_gemmlowp_definitions():
    x = np.array([5, -5, 6, -6, 7, -7, 2**31 - 1, -(2**31)], np.int64)
    # rounding half away from zero
    assert simulator.rounding_divide_by_pot(x[:6], 1).tolist() == [3, -3, 3, -3, 4, -4]
    assert simulator.rounding_divide_by_pot(x[:6], 2).tolist() == [1, -1, 2, -2, 2, -2]
    # SRDHM(a, 2^30) = a / 2 rounded; the only overflow saturates
    assert simulator.saturating_rounding_doubling_high_mul(x[:6], 1 << 30).tolist() == \
        [3, -2, 3, -3, 4, -3]
    assert simulator.saturating_rounding_doubling_high_mul(
        np.array([-(2**31)]), -(2**31)).tolist() == [2**31 - 1]


def test_simulator_rejects_wrong_input_dtype():
    region = regions.conv(np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be int8"):
        simulate(region, {"x": np.zeros(region.tensors["x"].shape, np.float32)})
