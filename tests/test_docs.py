"""The docs as a user meets them: every relative link resolves, user pages stay short, and the
README's results table is exactly what `headless report --summary` makes of the committed reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
RESULTS = ROOT / "docs" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(page: Path) -> list[str]:
    """Link targets outside code blocks that point into the repository (no scheme, not an anchor)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]


def test_relative_links_resolve():
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in _pages() for target in relative_links(page)
              if not (page.parent / target.split("#")[0]).exists()]
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](missing.md) [b](https://x.org) [c](#top) `[d](code.md)`\n```\n[e](fenced.md)\n```\n")
    assert relative_links(page) == ["missing.md"]


def test_user_pages_are_short():
    """Lab notes (dated runs, what a page used to say) live in docs/results/<campaign>/NOTES.md."""
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "guide").glob("*.md"),
             *(ROOT / "docs" / "reference").glob("*.md")]
    long = {str(p.relative_to(ROOT)): n for p in pages if (n := len(p.read_text(encoding="utf-8").splitlines())) > 300}
    assert not long, f"user pages over 300 lines: {long}"


def results_table(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    assert START in text and END in text, f"{page.name} has no {START} ... {END} block"
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def _readme_reports() -> list[Path]:
    """The reports of the campaigns the README's results table quotes, in its order."""
    table = results_table(ROOT / "README.md")
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert rows, "the README's results table is empty"
    reports = []
    for row in rows:
        campaign = row.split("|")[2].strip()
        found = sorted((RESULTS / campaign).glob("*-report.json"))
        assert found, f"the README quotes campaign {campaign!r}, which has no report under docs/results"
        reports += [p for p in found if p not in reports]
    return reports


def test_readme_results_figure_is_current():
    """docs/results/summary.png plots the README table's differences; the numbers it drew are in
    its metadata, so a stale figure fails here (pixels are not compared)."""
    from PIL import Image

    from headless.lab.reproduce.report import summary_points

    figure = RESULTS / "summary.png"
    reports = _readme_reports()
    command = "headless report --summary " + " ".join(str(p.relative_to(ROOT)) for p in reports) + f" --plot {figure.relative_to(ROOT)}"
    assert figure.is_file(), f"no {figure.relative_to(ROOT)}: run `{command}`"
    drawn = json.loads(Image.open(figure).text.get("Description", "[]"))
    assert drawn == summary_points(reports), f"{figure.relative_to(ROOT)} is stale: run `{command}`"
    assert "](docs/results/summary.png)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_results_come_from_committed_reports():
    """Regenerate the table from the reports its rows name; any hand-edited number fails here."""
    from headless.lab.reproduce.report import summary_markdown

    table = results_table(ROOT / "README.md")
    reports = _readme_reports()
    assert table == summary_markdown(reports), (
        "the README's results table differs from `headless report --summary` of its campaigns' reports; "
        "regenerate it:\n" + summary_markdown(reports))
    assert "superseded" not in table, "a superseded campaign is quoted as current in the README"


def test_results_index_lists_every_report():
    from headless.lab.reproduce.report import summary_markdown

    reports = sorted(RESULTS.glob("*/*-report.json"))
    assert results_table(RESULTS / "README.md") == summary_markdown(reports), (
        "docs/results/README.md's table is not `headless report --summary docs/results/*/*-report.json`")


def test_every_campaign_says_how_it_was_made():
    """A dated folder with its commands, code version and GPU; nothing loose at the top."""
    loose = [p.name for p in RESULTS.iterdir() if p.is_file() and p.name not in ("README.md", "summary.png")]
    assert not loose, f"results outside a campaign folder: {loose}"
    for campaign in (p for p in RESULTS.iterdir() if p.is_dir()):
        assert re.match(r"\d{4}-\d{2}-\d{2}-", campaign.name), f"{campaign.name}: not a dated campaign folder"
        readme = (campaign / "README.md").read_text(encoding="utf-8")
        for field in ("GPU", "Code version", "```bash"):
            assert field in readme, f"{campaign.name}/README.md does not say {field!r} (GPU, code version, commands)"
        status = re.search(r"^- \*\*Status\*\*: (\S+)", readme, re.M)
        assert status, f"{campaign.name}/README.md has no '- **Status**:' line"
        superseded = (campaign / "SUPERSEDED").exists()
        assert status.group(1).startswith("superseded") == superseded, (
            f"{campaign.name}/README.md says Status: {status.group(1)}, but its SUPERSEDED file is "
            + ("there" if superseded else "absent"))


def test_summary_marks_a_superseded_campaign(tmp_path):
    import shutil

    from headless.errors import HeadlessError
    from headless.lab.reproduce.report import summary_markdown

    src = next((ROOT / "docs" / "results").glob("*/encoder-report.json"))
    camp = tmp_path / "2030-01-01-encoder"
    camp.mkdir()
    shutil.copy(src, camp / src.name)
    assert summary_markdown([camp / src.name]).splitlines()[-1].endswith("| current |")
    (camp / "SUPERSEDED").write_text("by a later pair\n")
    row = summary_markdown([camp / src.name]).splitlines()[-1]
    assert "| 2030-01-01-encoder |" in row and row.endswith("| superseded: by a later pair |")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(HeadlessError, match="not a `headless report` report"):
        summary_markdown([tmp_path / "bad.json"])


def test_config_reference_is_current():
    """docs/reference/config.md is generated from config.py's field comments: a new field, a changed
    default or comment makes it stale until `python scripts/config_reference.py` is run."""
    import runpy

    page = runpy.run_path(str(ROOT / "scripts" / "config_reference.py"))["page"]()
    assert (ROOT / "docs" / "reference" / "config.md").read_text(encoding="utf-8") == page, (
        "docs/reference/config.md is stale: run `python scripts/config_reference.py`")
    assert "| `optim.lr` |" in page and "| `budget.time_s` |" in page


PRESET = """# A small Llama decoder (CLM) for the walk-through of docs/contributing.md
model:
  architecture: llama
  hidden_size: 32
  num_layers: 2
  num_heads: 2
  intermediate_size: 64
  max_position_embeddings: 128
optim:
  lr: 1.0e-3
  schedule: cosine
  warmup_steps: 1
batch_size: 4
compile: auto
"""


def test_add_a_preset(tmp_path, fixture_datasets, capsys):
    """docs/contributing.md, "Add a preset": a YAML file of fields, used by path, trains both twins;
    a wrong key in it is one line."""
    from headless.cli import main
    from headless.config import load_config

    preset = tmp_path / "llama-small.yaml"
    preset.write_text(PRESET)
    for flavour in ("headless", "vanilla"):
        config = load_config(str(preset), flavour=flavour)
        assert config.model.architecture == "llama" and config.objective_kind == "clm"
        assert config.preset == "llama-small" and config.needs_head == (flavour == "vanilla")
        run = tmp_path / flavour
        assert main(["pretrain", "--preset", str(preset), "--data", str(fixture_datasets["neox"]), "--run-dir",
                     str(run), "--flavour", flavour, "--max-steps", "2", "eval_every=2", "eval_batches=1",
                     "save_every=2", "log_every=1", "tensorboard=false", "--no-progress"]) == 0
        assert (run / "summary.json").is_file()
    capsys.readouterr()
    preset.write_text(PRESET.replace("  lr:", "  lrr:"))
    assert main(["pretrain", "--preset", str(preset), "--show-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert "optim.lrr" in err and len(err.splitlines()) == 1


def test_report_summary_command(capsys, tmp_path):
    """`headless report --summary REPORT.json ...` prints the table; without --summary, --output is
    required (one line, exit 2)."""
    from headless.cli import main

    reports = sorted(str(p) for p in RESULTS.glob("*/*-report.json"))
    assert main(["report", "--summary", *reports]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| study | campaign |") and len(out.splitlines()) == 2 + len(reports)
    assert main(["report", reports[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert "--output" in err and len(err.splitlines()) == 1
    assert main(["report", "--summary", str(tmp_path / "none.json")]) == 2
    assert "no such report" in capsys.readouterr().err
    # --plot: the differences drawn beside the table; only with --summary
    assert main(["report", "--summary", *reports, "--plot", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 10_000 and "plot written" in capsys.readouterr().err
    assert main(["report", reports[0], "--output", str(tmp_path / "r"), "--plot", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--plot goes with --summary" in err and len(err.splitlines()) == 1 and not (tmp_path / "r").exists()
