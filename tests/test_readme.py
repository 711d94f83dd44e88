"""The README's Python example runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    spaces = []
    for code in blocks:
        ns: dict = {}
        exec(compile(code, str(README), "exec"), ns)
        spaces.append(ns)
    ns = next(ns for ns in spaces if "g" in ns and "module" in ns)  # the description-language example
    g = ns["g"]
    assert g["layer1.1.add"].shape == (16, 32, 32)
    assert g.num_params() == sum(p.numel() for p in ns["module"].parameters())
