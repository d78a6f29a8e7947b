"""Issue #13 item 3: the lm-eval task template of docs/guide/evaluation-decoders.md builds exactly the prompts
headless scores, also on PIQA, whose queries end with a newline that headless strips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from headless.eval.zeroshot import read_task

DOC = Path(__file__).resolve().parents[1] / "docs" / "guide" / "evaluation-decoders.md"


def _documented_template() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    template = next(b for b in blocks if "output_type: multiple_choice" in b)
    return template


def test_documented_template_strips_the_query():
    assert "{{query.rstrip()}}" in _documented_template()


@pytest.mark.parametrize("task", ["piqa", "arc_easy", "boolq"])
def test_template_reproduces_headless_prompts(task, fixture_data, tmp_path):
    pytest.importorskip("lm_eval.tasks", reason="lm-evaluation-harness not installed (pip install 'lm_eval[hf]')")
    from lm_eval.tasks import TaskManager

    data = fixture_data["zeroshot"] / f"{task}.jsonl"
    if task == "piqa":
        assert data.read_text().count('\\n"') >= 1  # the fixture's queries end with a newline, like PIQA's
    yaml_text = _documented_template().replace("my_task", f"doc_{task}")
    yaml_text = re.sub(r"test: \S+", f"test: {data}", yaml_text)
    (tmp_path / f"doc_{task}.yaml").write_text(yaml_text, encoding="utf-8")
    manager = TaskManager(include_path=[str(tmp_path)], include_defaults=False)
    loaded = manager.load([f"doc_{task}"]) if hasattr(manager, "load") else None
    lm_task = loaded["tasks"][f"doc_{task}"] if loaded else manager.load_task_or_group([f"doc_{task}"])[f"doc_{task}"]
    docs = list(lm_task.test_docs())
    ours = read_task(data)
    assert len(docs) == len(ours) > 0
    for doc, example in zip(docs, ours):
        assert lm_task.doc_to_text(doc) == example.context
        assert lm_task.doc_to_choice(doc) == example.choices
        assert lm_task.doc_to_target(doc) == example.gold
        delimiter = lm_task.config.target_delimiter
        assert [(lm_task.doc_to_text(doc), delimiter + c) for c in lm_task.doc_to_choice(doc)] == example.requests()
