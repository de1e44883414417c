import pathlib

import pytest

from .error_cases import CASES, render


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}: {c.case}" for c in CASES])
def test_bad_input_gets_a_clear_error(case):
    with pytest.raises(case.exc, match=case.match):
        case.call()


def test_docs_table_is_current():
    pytest.importorskip("pytorch_grad_cam")  # the page is written with every extra installed: its messages name pytorch-grad-cam's methods
    page = pathlib.Path(__file__).parent.parent / "docs" / "errors.md"
    assert page.read_text() == render(), "docs/errors.md is stale: run python -m tests.error_cases > docs/errors.md"
