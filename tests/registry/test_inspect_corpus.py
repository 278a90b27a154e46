"""The fixed corpus of malformed headers: every case is a clear one-line BadFileError, quickly."""

from __future__ import annotations

import time

import pytest

from modelmgr.errors import BadFileError
from modelmgr.registry.inspect import inspect_file
from modelmgr.registry.inspect import _inspect_bytes
from tests.fixtures.model_files import bad_cases

CASES = bad_cases()


def test_corpus_is_about_two_hundred_distinct_cases():
    assert len(CASES) >= 190
    assert len({(c.name, c.data) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}:{c.label}" for c in CASES])
def test_each_malformed_header_is_one_clear_line(case):
    start = time.perf_counter()
    with pytest.raises(BadFileError) as info:
        _inspect_bytes(case.data, len(case.data), case.name)  # unguarded: no parser bug hides behind the net
    assert time.perf_counter() - start < 0.5
    message = info.value.message
    assert message.startswith(f"{case.name}: ") and "\n" not in message and len(message) < 300
    assert "unexpected" not in message


def test_corpus_through_real_files(tmp_path):
    for i, case in enumerate(CASES):
        path = tmp_path / f"{i}-{case.name}"
        path.write_bytes(case.data)
        with pytest.raises(BadFileError) as info:
            inspect_file(path)
        assert info.value.message.startswith(f"{path.name}: "), case.label
