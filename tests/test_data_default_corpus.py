"""The embedded default corpus: non-empty, deterministic, side-effect free, a valid input spec."""

from __future__ import annotations

import sys

from headless.data.default_corpus import DEFAULT_CORPUS, default_corpus_documents
from headless.data.readers import iter_documents, resolve_inputs


def test_default_corpus_is_substantial_deterministic_and_isolated():
    before = set(sys.modules)
    first = default_corpus_documents.__wrapped__()            # two fresh child processes
    second = default_corpus_documents.__wrapped__()
    assert first == second
    assert len(first) > 200 and sum(map(len, first)) > 1_000_000
    assert all(doc.strip() for doc in first)
    assert any("Abstract Base Classes" in doc for doc in first)  # abc's docstring
    # the parent imported none of the stdlib modules the corpus is made of
    assert not {"antigravity", "this", "tkinter", "smtplib", "xml.dom.minidom"} & (set(sys.modules) - before)


def test_default_corpus_is_an_input_spec():
    assert [s.kind for s in resolve_inputs(None)] == ["default"]
    assert [s.kind for s in resolve_inputs([DEFAULT_CORPUS])] == ["default"]
    assert list(iter_documents(DEFAULT_CORPUS)) == default_corpus_documents()
