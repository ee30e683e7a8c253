"""The README's Python example runs as printed (so the README stays true) and trains."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def readme_python_example():
    section = README.read_text().split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_wraps_and_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example's kernel store is a relative directory
    names = {}
    exec(compile(readme_python_example(), str(README), "exec"), names)
    assert "loss" in capsys.readouterr().out
    assert names["loss"].item() < 0.05
    seed = names["morphable"].layer("0").layer_stats()[0]
    assert seed.lifecycle == "ACTIVE" and abs(seed.alpha - 0.3) < 1e-6
    assert len(list((tmp_path / "example-kernels").glob("*.safetensors"))) == 1
