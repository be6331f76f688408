"""The suite's own rules: shared helpers live in tests/support.py, test modules stand alone."""

import hashlib
import re

from tests.support import BASE_DIR

TESTS = BASE_DIR / "tests"


def test_no_test_module_imports_another_or_conftest():
    offenders = {
        path.name: found
        for path in TESTS.glob("*.py")
        if (found := re.findall(r"^\s*(?:from|import)\s+tests\.(?:test_\w+|conftest)\b.*$", path.read_text(), re.M))
    }
    assert offenders == {}, "import shared helpers from tests.support"


def test_no_test_file_is_a_copy_of_another():
    digests = {}
    for path in TESTS.glob("test_*.py"):
        digests.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(path.name)
    assert [names for names in digests.values() if len(names) > 1] == []


def test_no_test_defines_a_helper_that_support_already_has():
    shared = set(re.findall(r"^(?:def|class) (\w+)", (TESTS / "support.py").read_text(), re.M))
    redefined = {
        path.name: sorted(names)
        for path in TESTS.glob("test_*.py")
        if (names := shared & set(re.findall(r"^(?:def|class) (\w+)", path.read_text(), re.M)))
    }
    assert redefined == {}
