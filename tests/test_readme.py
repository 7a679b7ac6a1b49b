"""The README's Python examples run as written (against a real server on a free port)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("\n")[:8]
    assert "make demo" in "\n".join(head) and "make test" in "\n".join(head)


def test_readme_python_examples_run(tmp_path, monkeypatch, replay_server, capsys):
    blocks = _python_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        code = code.replace("127.0.0.1:50051", replay_server.address)
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()
