import torch
import torch.nn as nn

import edgecc
from edgecc.targets.host import lowering
from edgecc.targets.host.schedule import default_cpu_schedule


def test_default_schedule_parallelizes_kernels_and_keeps_results(tmp_path):
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      nn.Linear(8 * 64, 10)).eval()
    program = edgecc.trace(m, (torch.randn(2, 3, 8, 8),))
    module = lowering.to_relax(program)
    target = lowering.llvm_target(None, None)
    with target:
        legal = tvm.transform.Sequential(cpu.library_dispatch_passes(target) +
                                         cpu.legalize_passes(target))(module)
        scheduled = default_cpu_schedule()(legal)
    text = scheduled.script()
    assert "T.parallel" in text
    prim = [f for _, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert prim and all("tir.is_scheduled" in f.attrs for f in prim)
    # the conv and the matmul reductions got the schedule (their init is decomposed), not
    # left as TVM built them because a schedule step raised
    inits = [f.attrs["global_symbol"] for f in prim if "_init" in f.script()]
    assert len(inits) >= 2, inits

    x = torch.randn(2, 3, 8, 8)
    outs = {}
    for schedule in ("edgecc", "tvm"):
        res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                             target_options={"schedule": schedule},
                             output_dir=str(tmp_path / schedule))
        assert res.report["verification"]["passed"]
        outs[schedule] = res.run(x)
    torch.testing.assert_close(outs["edgecc"], outs["tvm"], atol=1e-5, rtol=1e-5)
