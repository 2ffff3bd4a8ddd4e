import pytest

# matrix.py's helpers assert on every answer: rewritten like a test module's, so a failure
# shows the values.
pytest.register_assert_rewrite("tests.accounts.matrix")
