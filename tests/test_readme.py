"""The README's Python examples run as written (they are the first code a newcomer copies)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "the README lost its Python examples"
    namespace: dict = {}
    for block in blocks:  # later blocks reuse names from earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["signals"].grad.shape == (3, 1000)
    assert namespace["window"].grad.shape == (31,)
    assert namespace["w"].requires_grad  # the Gaussian's std reaches the taps
    assert namespace["y"].shape == (3, 1000)
