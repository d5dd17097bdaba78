"""DESIGN.md's layering: the core never imports a backend library; a target whose
toolchain is missing still lists itself and says what is missing."""

import subprocess
import sys

SIMULATE_NO_TVM = (
    "import sys\n"
    "class _Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'tvm' or name.startswith('tvm.'):\n"
    "            raise ImportError('No module named ' + repr(name))\n"
    "sys.meta_path.insert(0, _Block())\n"
)


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_core_and_passes_do_not_import_tvm():
    code = (
        "import sys, torch, edgecc, edgecc.passes, edgecc.targets\n"
        "from edgecc.pass_manager import PassManager\n"
        "p = edgecc.trace(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU()),"
        " (torch.randn(2, 3),))\n"
        "PassManager('fold-batchnorm,fuse,dce')(p)\n"
        "print('tvm' in sys.modules)\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_missing_toolchain_is_reported_not_hidden(tmp_path):
    code = SIMULATE_NO_TVM + (
        "from edgecc.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, "targets"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "host" in r.stdout and "UNAVAILABLE" in r.stdout
    assert "pip install" in r.stdout and "apache-tvm==0.27.0.post1" in r.stdout
    model = tmp_path / "m.pt2"
    prog = run_python(
        "import torch, edgecc\n"
        f"edgecc.trace(torch.nn.Linear(2, 2), (torch.randn(2, 2),)).save({str(model)!r})\n")
    assert prog.returncode == 0, prog.stderr
    r = subprocess.run([sys.executable, "-c", code, "compile", str(model), "-o",
                        str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "target 'host' is unavailable" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
