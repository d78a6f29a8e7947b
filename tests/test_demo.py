"""Issue #13 item 10: `make demo` trains both twins and ends by showing what they learned."""

from __future__ import annotations

import json
import re
from pathlib import Path

from headless.demo import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "max_steps=4", "eval_every=2", "batch_size=4", "log_every=2", "data.tokenizer_vocab_size=512",
        "tensorboard=false"]


def test_makefile_demo_is_the_demo_module():
    recipe = re.search(r"^demo:.*\n\t(.+)$", (REPO / "Makefile").read_text(), flags=re.M).group(1)
    assert "-m headless.demo" in recipe


def test_demo_shows_twins_predictions_neighbours_and_plot(fixture_data, tmp_path, capsys):
    overrides = TINY + [f"data.inputs=[{fixture_data['corpus']}]", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["--run-dir", str(tmp_path / "demo"), "--quiet", *overrides]) == 0
    report = capsys.readouterr().out
    assert re.search(r"\| training loss \(last\) \| [\d.]+ \(CWT, in-batch\) \| [\d.]+ \(CE, vocabulary\) \|", report)
    assert re.search(r"\| masked-token top-1 over the vocabulary \(\d+ held-out positions\) \| [\d.]+% \| [\d.]+% \|",
                     report)
    assert "| tokens / s (median) |" in report
    assert len(re.findall(r"headless: .+ vanilla: ", report)) >= 1  # masked-word guesses of both twins
    assert len(re.findall(r"^ +\w+ -> \S+", report, flags=re.M)) >= 3  # nearest neighbours
    plot = Path(re.search(r"^Plot: (.+)$", report, flags=re.M).group(1))
    assert plot.is_file() and plot.parent == tmp_path / "demo"
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert set(saved["masked_top1"]) == {"headless", "vanilla"}
    assert (tmp_path / "demo" / "demo.md").read_text().strip() in report
