"""The suite's own rules: shared helpers live in tests/support.py, test modules stand alone."""

import ast
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


# The domain (models, services, selectors, their errors) knows nothing of HTTP or DRF:
# the API layer (chat/api, chat/live) renders it. DRF's token model is data, not HTTP.
DOMAIN = ["chat/exceptions.py", "chat/models.py", "chat/services", "chat/selectors", "accounts/services.py"]
DOMAIN += ["accounts/selectors.py", "accounts/models.py"]
DOMAIN_MAY_IMPORT = {"rest_framework.authtoken.models"}


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_domain_imports_nothing_of_drf_or_http_responses():
    offenders = {}
    for name in DOMAIN:
        root = BASE_DIR / name
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            found = {
                module
                for module in imported_modules(path)
                if (module.startswith("rest_framework") and module not in DOMAIN_MAY_IMPORT)
                or module in {"django.http", "chat.api"}
                or module.startswith("chat.api.")
            }
            if found:
                offenders[str(path.relative_to(BASE_DIR))] = sorted(found)
    assert offenders == {}, "render errors in chat/api; the domain raises chat.exceptions"


def test_every_error_class_is_raised_or_rendered_somewhere_else():
    classes = re.findall(r"^class (\w+)\(", (BASE_DIR / "chat/exceptions.py").read_text(), re.M)
    code = [
        path.read_text()
        for folder in ("chat", "accounts", "chatsite")
        for path in (BASE_DIR / folder).rglob("*.py")
        if path != BASE_DIR / "chat/exceptions.py"
    ]
    unused = [name for name in classes if not any(re.search(rf"\b{name}\b", text) for text in code)]
    assert unused == []
