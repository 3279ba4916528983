"""Countdown reward and its exact, bounded arithmetic parser."""

import ast
import operator
import random
import time
from fractions import Fraction

import pytest

from rewards import countdown as countdown_module
from rewards.countdown import countdown, evaluate, extract_equation

NUMS, TARGET = [100, 4, 4], 24

CASES = [
    # (completion, expected) with nums [100, 4, 4], target 24, format_score 0.1
    ("<answer>(100 - 4) / 4</answer>", 1.0),  # correct
    ("<think>let me try</think>\n<answer>(100-4)/4</answer>", 1.0),  # after the think block, no spaces
    ("<answer>(100 - 4) / 4 = 24</answer>", 1.0),  # "expr = target" form
    ("<answer>  (100 - 4) / 4  </answer>", 1.0),  # surrounding whitespace
    ("<answer>4 * (100 / 4 - 4) / (100 - 4 - 4 - 4)</answer>", 0.1),  # a number used too often
    ("<answer>-(4 - 100) / 4</answer>", 1.0),  # unary minus
    ("<answer>(100 - 4) / 4 = 25</answer>", 0.1),  # claims the wrong target
    ("<answer>100 - 4 - 4</answer>", 0.1),  # right numbers, wrong value
    ("<answer>(100 - 4) / 4 + 0</answer>", 0.1),  # an extra literal
    ("<answer>(100 - 4) / 2 / 2</answer>", 0.1),  # right value, wrong numbers
    ("<answer>96 / 4</answer>", 0.1),  # missing a number
    ("<answer>(100 - 4) / (4 - 4)</answer>", 0.1),  # division by zero
    ("<answer>(100 - 4) / 4.0</answer>", 0.1),  # decimals are not in the grammar
    ("<answer>(100 - 4) ÷ 4</answer>", 0.1),  # neither are other symbols
    ("<answer>(100 - 4 / 4</answer>", 0.1),  # unbalanced parentheses
    ("<answer>(100 - 4) / 4 = 24 = 24</answer>", 0.1),  # two equals signs
    ("<answer>(100 - 4) / 4 = 20 + 4</answer>", 0.1),  # the right side must be the target itself
    ("<answer></answer>", 0.1),  # empty answer
    ("<answer>__import__('os').system('true')</answer>", 0.1),  # code is not arithmetic
    ("(100 - 4) / 4", 0.0),  # no answer tag
    ("<answer>(100 - 4) / 4", 0.0),  # answer never closed
    ("<answer>(100 - 4) / 4</answer></think> no answer after thinking", 0.0),  # answer only inside thinking
    ("<answer>100 - 4 - 4</answer> then <answer>(100 - 4) / 4</answer>", 1.0),  # the last answer counts
    ("<answer>(100 - 4) / 4</answer> then <answer>100 - 4 - 4</answer>", 0.1),  # ... even when wrong
]


@pytest.mark.parametrize("text,expected", CASES)
def test_countdown(text, expected):
    assert countdown([text], nums=[NUMS], target=[TARGET], format_score=0.1) == [expected]


def test_format_score_defaults_to_zero():
    # a wrong but well-formed answer scores 0.0 unless format_score is set
    assert countdown(["<answer>100 - 4 - 4</answer>"], nums=[NUMS], target=[TARGET]) == [0.0]


ROW_CASES = [
    # (nums, target, expected) for the completion "<answer>3 * 8</answer>"
    ([3, 8], 24, 1.0),  # plain ints
    (["3", "8"], "24", 1.0),  # numbers stored as strings
    ([3.0, 8.0], 24.0, 1.0),  # numbers stored as floats
    ([8, 3], -24, 0.0),  # negative target not reached
    (None, 24, None),  # no numbers: not applicable
    ([], 24, None),  # empty numbers: not applicable
    ([3, 8], None, None),  # no target: not applicable
]


@pytest.mark.parametrize("nums,target,expected", ROW_CASES)
def test_countdown_rows(nums, target, expected):
    assert countdown(["<answer>3 * 8</answer>"], nums=[nums], target=[target]) == [expected]


def test_negative_target_and_chat_completion():
    # a negative target reached with unary minus, from a chat completion
    chat = [{"role": "assistant", "content": "<answer>-(3 * 8) = -24</answer>"}]
    assert countdown([chat], nums=[[3, 8]], target=[-24]) == [1.0]


@pytest.mark.parametrize("bad", [[1.5, 2], ["x", 2], [True, 2]])
def test_bad_nums_column_raises(bad):
    # non-integer data is a data error, named with the reward and the column
    with pytest.raises(ValueError, match="countdown: column 'nums'"):
        countdown(["<answer>1</answer>"], nums=[bad], target=[3])


def test_missing_column_raises_naming_it():
    with pytest.raises(TypeError, match="target"):
        countdown(["<answer>1</answer>"], nums=[[1]])


def test_hostile_nesting_and_length():
    # 10,000 nested parentheses: no RecursionError, just a wrong answer
    deep = "(" * 10_000 + "3 * 8" + ")" * 10_000
    assert countdown([f"<answer>{deep}</answer>"], nums=[[3, 8]], target=[24]) == [0.0]
    # nesting within the character budget but past MAX_DEPTH is rejected too
    depth = countdown_module.MAX_DEPTH + 1
    assert countdown([f"<answer>{'(' * depth}3 * 8{')' * depth}</answer>"], nums=[[3, 8]], target=[24]) == [0.0]
    # ... and just inside it is fine
    depth = countdown_module.MAX_DEPTH
    assert countdown([f"<answer>{'(' * depth}3 * 8{')' * depth}</answer>"], nums=[[3, 8]], target=[24]) == [1.0]
    # a long run of unary minus is a loop, not recursion
    assert evaluate("-" * 900 + "5") == (Fraction(5), [5])


def test_one_megabyte_completion_is_fast():
    long_equation = "<answer>" + "1 + " * 250_000 + "1</answer>"  # over MAX_EQUATION_CHARS: not parsed
    many_tags = "<answer>1 + 1</answer>" + "</answer><answer>" * 60_000  # the last answer is empty
    start = time.perf_counter()
    assert countdown([long_equation, many_tags], nums=[[1, 1]] * 2, target=[2] * 2) == [0.0, 0.0]
    assert time.perf_counter() - start < 1.0


EVAL_CASES = [
    # (expression, value)
    ("1 + 2 * 3", 7),  # precedence
    ("(1 + 2) * 3", 9),  # parentheses
    ("8 / 3 * 3", 8),  # exact fractions, no float rounding
    ("10 - 3 - 2", 5),  # left associativity of -
    ("64 / 4 / 2", 8),  # left associativity of /
    ("-3 * -3", 9),  # unary minus binds tighter than *
    ("- (2 - 5)", 3),  # unary minus before a parenthesis
    ("007 + 1", 8),  # leading zeros
]


@pytest.mark.parametrize("expression,value", EVAL_CASES)
def test_evaluate(expression, value):
    assert evaluate(expression)[0] == value


@pytest.mark.parametrize("expression", ["", "1 +", "()", "1 2", "2 ** 3", "1e3", "(1))", "abs(1)", "1 / (2 - 2)"])
def test_evaluate_rejects(expression):
    with pytest.raises(ValueError):
        evaluate(expression)


def _reference(node):
    # Python's own arithmetic on Fractions, for a random cross-check
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
    if isinstance(node, ast.Expression):
        return _reference(node.body)
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp):
        return -_reference(node.operand)
    return ops[type(node.op)](_reference(node.left), _reference(node.right))


def _random_expression(rng, depth=0):
    if depth > 3 or rng.random() < 0.3:
        return str(rng.randint(0, 20))
    if rng.random() < 0.15:
        return "-" + _random_expression(rng, depth + 1)
    op = rng.choice("+-*/")
    return f"({_random_expression(rng, depth + 1)} {op} {_random_expression(rng, depth + 1)})"


def test_evaluate_matches_python_arithmetic():
    # 500 random expressions: same exact value as Python's parser, or both divide by zero
    rng = random.Random(0)
    for _ in range(500):
        expression = _random_expression(rng)
        try:
            expected = _reference(ast.parse(expression, mode="eval"))
        except ZeroDivisionError:
            with pytest.raises(ValueError, match="division by zero"):
                evaluate(expression)
            continue
        assert evaluate(expression)[0] == expected, expression


def test_extract_equation():
    assert extract_equation("no tags") is None
    assert extract_equation("<think><answer>1</answer></think>") is None  # nothing after the thinking
    assert extract_equation("<answer>1</answer> <answer> 2 </answer>") == "2"


def test_numpy_cells():
    # columns loaded through pandas hold numpy scalars
    np = pytest.importorskip("numpy")
    nums = np.array([3, 8], dtype=np.int64)
    assert countdown(["<answer>3 * 8</answer>"], nums=[nums], target=[np.int64(24)]) == [1.0]
    assert countdown(["<answer>3 * 8</answer>"], nums=[nums], target=[np.float64(24.0)]) == [1.0]


RHS_CASES = [
    # (answer, expected) with nums [3, 8] and target -24
    ("-(3 * 8) = -24", 1.0),  # negative target
    ("-(3 * 8) = - 24", 1.0),  # a space after the minus
    ("-(3 * 8) =\n-24\n", 1.0),  # newlines around the right side
    ("-(3 * 8) = 24", 0.0),  # wrong sign
    ("-(3 * 8) = -24.0", 0.0),  # not an integer literal
    ("-(3 * 8) = -2²", 0.0),  # unicode digits are not digits here
    ("-(3 * 8) = ", 0.0),  # empty right side
    ("= -24", 0.0),  # empty left side
]


@pytest.mark.parametrize("answer,expected", RHS_CASES)
def test_right_hand_side(answer, expected):
    assert countdown([f"<answer>{answer}</answer>"], nums=[[3, 8]], target=[-24]) == [expected]
