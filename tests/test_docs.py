"""The pages newcomers read stay short and true to the measured results."""

from __future__ import annotations

from load import report_docs


def test_readme_is_a_newcomers_page():
    assert len(report_docs.README.read_bytes()) <= 10 * 1024


def test_benchmark_pages_match_the_result_files():
    # Fails when a result file changed and `make docs` was not run (or a page was hand-edited).
    assert report_docs.main(["--check"]) == 0


def test_readme_links_resolve():
    import re

    text = report_docs.README.read_text()
    for target in re.findall(r"\]\(([^)#]+)", text):
        assert (report_docs.ROOT / target).exists(), f"README links to {target}, which does not exist"
