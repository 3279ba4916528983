"""Tests of ``rewards.math``: extraction, equivalence (one table row per policy case), the reward
contract, and hostile inputs that must return promptly without raising."""

from __future__ import annotations

import time

import pytest

from grpo_kit.registry import get_reward
from rewards.math import extract_answer, is_equivalent, math_accuracy

# (pred, gold, expected): one line per case, grouped by category
EQUIVALENCE = [
    # integers
    ("42", "42", True),  # identical
    ("042", "42", True),  # leading zero
    ("-7", "-7", True),  # negative
    ("43", "42", False),  # off by one
    ("-42", "42", False),  # sign matters
    ("1000000001", "1000000000", False),  # exact, no float tolerance on big integers
    # decimals
    ("0.5", "0.50", True),  # trailing zero
    ("3.", "3", True),  # trailing period
    (".5", "0.5", True),  # no leading zero
    ("0.333", r"\frac{1}{3}", False),  # a rounded decimal is not the fraction
    ("2.5", "2.50001", False),  # close is not equal
    # fractions
    ("0.5", "1/2", True),  # decimal vs slash fraction
    (r"\frac{1}{2}", "0.5", True),  # \frac
    (r"\dfrac{3}{4}", "0.75", True),  # \dfrac
    (r"\tfrac{3}{4}", r"\frac34", True),  # \tfrac vs braceless \frac
    (r"\frac12", "1/2", True),  # \frac12
    (r"\frac{2}{4}", r"\frac{1}{2}", True),  # unreduced
    (r"-\frac{1}{2}", r"\frac{-1}{2}", True),  # sign placement
    (r"\frac{1}{3}", r"\frac{1}{2}", False),  # different fraction
    (r"2\frac{1}{2}", "5/2", True),  # mixed number policy
    # thousands separators
    ("1,000", "1000", True),  # comma
    ("1{,}000", "1000", True),  # LaTeX {,}
    (r"1\,000", "1000", True),  # thin space
    ("1,234,567", "1234567", True),  # several groups
    ("1,000", "100", False),  # not a different number
    ("(1,000)", "1000", False),  # inside brackets the comma separates items
    # percent
    (r"50\%", "50", True),  # percent vs bare number
    (r"50\%", "0.5", True),  # percent vs fraction of one
    ("0.5", r"50\%", True),  # symmetric
    ("50%", r"50\%", True),  # both percent
    (r"25\%", "0.5", False),  # wrong percent
    # units and \text
    (r"5 \text{ cm}", "5", True),  # \text unit
    ("5 dollars", "5", True),  # plain unit word
    (r"12\text{ cm}^2", "12", True),  # squared unit
    (r"5\mbox{ m}", "5", True),  # \mbox unit
    ("6 dollars", "5", False),  # unit does not rescue a wrong value
    # currency
    (r"\$5", "5", True),  # \$
    (r"\$1,000.50", "1000.5", True),  # currency with thousands
    (r"\$5", "6", False),  # wrong amount
    # degrees
    (r"30^\circ", "30", True),  # ^\circ
    ("30°", "30", True),  # unicode degree
    (r"30^{\circ}", r"30^\circ", True),  # braced
    (r"30^\circ", r"\frac{\pi}{6}", False),  # degrees are not converted to radians
    # scientific notation
    (r"1.2\times10^{3}", "1200", True),  # \times 10^
    ("1.2e3", "1200", True),  # ASCII e-notation
    (r"1.2 \cdot 10^3", "1.2e3", True),  # \cdot form
    (r"1.2\times10^{4}", "1200", False),  # wrong exponent
    # radicals
    (r"\sqrt{8}", r"2\sqrt{2}", True),  # simplified radical
    (r"2\sqrt2", r"\sqrt{8}", True),  # braceless \sqrt
    (r"\sqrt[3]{8}", "2", True),  # cube root
    (r"\sqrt[3]{-8}", "-2", True),  # real odd root
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),  # rationalised
    ("sqrt(2)", r"\sqrt2", True),  # ASCII sqrt
    (r"\sqrt{3}", r"\sqrt{2}", False),  # different radicand
    ("1.414", r"\sqrt{2}", False),  # an approximation is not the value
    # pi
    (r"2\pi", r"\pi \cdot 2", True),  # commuted
    ("π/2", r"\frac{\pi}{2}", True),  # unicode pi
    (r"\pi r^2", r"r^2\pi", True),  # with a variable
    ("3.14", r"\pi", False),  # approximation
    (r"3.14159265358979", r"\pi", True),  # 15 significant digits
    # assignments and equations
    ("x=3", "3", True),  # assignment vs value
    ("3", "x = 3", True),  # value vs assignment
    ("x = 3", "x=3", True),  # both assignments
    ("x=4", "3", False),  # wrong value
    ("y=3", "x=3", False),  # two equations in different variables
    ("y=2x+1", "2x+1=y", True),  # sides swapped
    ("2y=4x+2", "y=2x+1", True),  # scaled equation
    ("y=2x+2", "y=2x+1", False),  # different line
    ("x > 2", "2 < x", True),  # flipped inequality
    (r"x \ge 2", "x > 2", False),  # strictness matters
    # intervals
    ("[1,2)", "[1,2)", True),  # identical
    ("[1,2)", "[1,2]", False),  # open vs closed end
    (r"(-\infty, 0)", r"(-\infty,0)", True),  # infinity endpoint
    (r"(0,\infty)", r"(0,+\infty)", True),  # +\infty
    (r"(-\infty,0)", r"(0,\infty)", False),  # different ray
    (r"(-\infty,0)\cup(1,\infty)", r"(1,\infty)\cup(-\infty,0)", True),  # union order
    (r"(-\infty,0]\cup(1,\infty)", r"(-\infty,0)\cup(1,\infty)", False),  # one bracket differs
    (r"\left[ \frac{1}{2}, 3 \right)", "[0.5,3)", True),  # \left \right
    ("[1,2]", r"x \in [1,2]", True),  # membership prefix dropped
    # sets and tuples
    (r"\{1,2\}", r"\{2,1\}", True),  # set order
    ("1, 2", r"\{2, 1\}", True),  # bare list is a set
    ("2, 1", "1, 2", True),  # bare lists unordered
    ("(1,2)", r"\{2,1\}", False),  # tuple vs set
    ("(1,2)", "(2,1)", False),  # tuple order
    ("(1,2)", "(1, 2)", True),  # spacing
    (r"(\frac{1}{2}, 3)", "(0.5,3)", True),  # elementwise
    (r"1\pm\sqrt{2}", r"1+\sqrt2, 1-\sqrt2", True),  # \pm expands
    (r"\{1,2,3\}", r"\{1,2\}", False),  # extra element
    ("x=1, x=2", "1, 2", True),  # assignments in a list
    # matrices
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", True),  # env
    (r"\begin{pmatrix}\frac12&2\\3&4\end{pmatrix}", r"\begin{pmatrix}0.5&2\\3&4\end{pmatrix}", True),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&3\\2&4\end{pmatrix}", False),  # T
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1&2\end{pmatrix}", False),  # shape
    # polynomials and rational expressions
    ("x^2+2x+1", "(x+1)^2", True),  # expanded vs factored
    ("x^2-1", "(x-1)(x+1)", True),  # difference of squares
    ("x^2-1", "(x-1)^2", False),  # wrong factorisation
    (r"\frac{x^2-1}{x-1}", "x+1", True),  # rational simplifies
    (r"\frac{1}{x}+\frac{1}{y}", r"\frac{x+y}{xy}", True),  # common denominator
    ("x+1", "y+1", False),  # variable names matter
    ("2x", "x2", True),  # implicit product either order
    ("a^2 b", "b a a", True),  # commutative
    # complex numbers
    ("3+4i", "4i+3", True),  # order
    (r"\frac{1}{i}", "-i", True),  # 1/i
    ("(1+i)^2", "2i", True),  # square
    ("3-4i", "3+4i", False),  # conjugate
    # logarithms
    (r"\log_2 8", "3", True),  # base 2
    (r"\ln e", "1", True),  # natural
    (r"\log_{3}{81}", "4", True),  # braced base and argument
    (r"\log_2 8", "4", False),  # wrong
    (r"2\ln 2", r"\ln 4", True),  # log identity
    # trig and misc functions
    (r"\sin^2 x + \cos^2 x", "1", True),  # Pythagorean identity
    (r"\sin\frac{\pi}{6}", "1/2", True),  # value
    ("5!", "120", True),  # factorial
    (r"\binom{5}{2}", "10", True),  # binomial
    ("|-3|", "3", True),  # absolute value
    # multiple choice
    ("(B)", "B", True),  # parenthesised
    (r"\text{B}", "B", True),  # \text
    ("B", r"\text{(B)}", True),  # gold in \text
    ("(B) 42", "B", True),  # letter with the option text
    ("C", "B", False),  # wrong letter
    ("b", "B", False),  # choices are capital letters
    ("42", "B", False),  # the option's value is not the letter
    # plain text
    ("Monday", "monday", True),  # case
    (r"\text{Monday}", "Monday", True),  # \text
    ("Tuesday", "Monday", False),  # different word
    ("yes", "Yes", True),  # case
    ("no", "yes", False),  # different word
    # degenerate
    ("", "1", False),  # empty prediction
    ("1", "", False),  # empty gold
    ("(((", "1", False),  # unparseable prediction
    ("(((", "(((", True),  # unparseable but identical text
]


@pytest.mark.parametrize(("pred", "gold", "expected"), EQUIVALENCE)
def test_is_equivalent(pred, gold, expected):
    assert is_equivalent(pred, gold) is expected


@pytest.mark.parametrize(("pred", "gold", "expected"), [c for c in EQUIVALENCE if c[0] and c[1]])
def test_equivalence_is_symmetric_except_choice(pred, gold, expected):
    # swapping pred and gold keeps the verdict (multiple choice is asymmetric by design)
    if gold.strip("()").replace(r"\text{", "").rstrip("}").strip("()") in "ABCDE":
        pytest.skip("multiple-choice gold is asymmetric")
    assert is_equivalent(gold, pred) is expected


# (completion, extracted answer): one line per extraction rule
EXTRACTION = [
    (r"so \boxed{42}.", "42"),  # boxed
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),  # nested braces
    (r"first \boxed{1} then \boxed{2}", "2"),  # last boxed wins
    (r"\boxed 5$", "5"),  # braceless boxed
    (r"\fbox{7}", "7"),  # fbox
    ("<answer>12</answer>", "12"),  # answer tags
    (r"<answer>so \boxed{12}</answer>", "12"),  # boxed inside answer tags
    ("<answer> 12", "12"),  # unclosed answer tag
    ("<think>a</think>\n<answer>3</answer>", "3"),  # R1 form
    ("Janet pays 3 + 4 = 7.\n#### 7", "7"),  # GSM8K
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),  # phrase with $...$
    ("Final answer: 12 apples. Done.", "12 apples"),  # final answer phrase
    ("**Final Answer:** 9", "9"),  # markdown bold
    ("no answer here 12", None),  # nothing marked, no fallback
    (r"<think>\boxed{7}</think>", None),  # think hack: boxed only in the reasoning
    ("<think>the answer is 7", None),  # unterminated reasoning
    (r"<think>\boxed{7}</think> The answer is 8", "8"),  # only after </think>
    (r"\boxed{", None),  # unclosed boxed
]


@pytest.mark.parametrize(("completion", "expected"), EXTRACTION)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_last_number_fallback():
    # the fallback is off by default and reads the last number when on
    assert extract_answer("we get 1,200 in total") is None
    assert extract_answer("we get 1,200 in total", fallback="last_number") == "1,200"
    assert extract_answer(r"<think>12</think>none", fallback="last_number") is None
    with pytest.raises(ValueError, match="last_number"):
        extract_answer("1", fallback="first_number")


def test_reward_contract():
    # registered, TRL-style signature, chat completions, None for a missing gold, extra columns
    fn = get_reward("math_accuracy")
    assert fn is math_accuracy
    chat = [{"role": "assistant", "content": r"<think>hmm</think><answer>\boxed{2}</answer>"}]
    scores = fn([chat, "x = 2", r"\boxed{3}", "2"], answer=["2", "2", "2", None], prompts=["p"] * 4)
    assert scores == [1.0, 0.0, 0.0, None]  # "x = 2" has no marked answer
    assert fn(["x = 2"], answer=["2"], fallback="last_number") == [1.0]
    with pytest.raises(ValueError, match="fallback"):
        fn(["1"], answer=["1"], fallback="bad")


def test_think_hack_gets_no_credit():
    # the correct answer only inside <think>, a wrong one after: 0.0
    hack = r"<think>\boxed{5} <answer>5</answer></think><answer>6</answer>"
    assert math_accuracy([hack], answer=["5"]) == [0.0]
    # the correct answer only inside <think>, nothing after: 0.0
    assert math_accuracy([r"<think>\boxed{5}</think>"], answer=["5"]) == [0.0]
    assert math_accuracy([r"<think>\boxed{5}</think>"], answer=["5"], fallback="last_number") == [0.0]
    # and the honest version gets credit
    assert math_accuracy([r"<think>5?</think><answer>\boxed{5}</answer>"], answer=["5"]) == [1.0]


def test_gold_solution_column():
    # a gold that is a whole solution is reduced to its boxed / #### answer
    assert math_accuracy([r"\boxed{4}"], answer=[r"2+2 gives \boxed{4}."]) == [1.0]
    assert math_accuracy([r"\boxed{4}"], answer=["2+2=4\n#### 4"]) == [1.0]
    assert math_accuracy([r"\boxed{4}"], answer=[4]) == [1.0]  # a numeric gold


HOSTILE = [
    "1" * 1_000_000,  # 1 MB of digits
    r"\boxed{" + "(" * 10_000 + "1" + ")" * 10_000 + "}",  # 10,000 nested parentheses
    r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",  # 10,000 nested braces
    r"\boxed{9^{9^{9^9}}}",  # a power tower
    r"\boxed{10^{10^{10}}}",  # a huge power of ten
    r"\boxed{(10^{1000})^{1000}}",  # a large power of a large number
    r"\boxed{1000000!}",  # a huge factorial
    r"\boxed{" * 200_000,  # many unclosed boxes
    "the answer " + " " * 1_000_000,  # a phrase followed by 1 MB of spaces
    "<answer>" + "a" * 1_000_000 + "</answer>",  # 1 MB answer
    r"\boxed{" + r"\sqrt{" * 5000 + "2" + "}" * 5001,  # deep radicals
    r"\boxed{" + "-" * 100_000 + "1}",  # long unary chain
    r"\boxed{" + "x^" * 5000 + "2}",  # long power chain
    r"\boxed{" + "+".join(["x"] * 400) + "}",  # a long sum
    r"\boxed{1e999999999}",  # a literal with a huge exponent
    r"\boxed{\{" + ",".join(map(str, range(300))) + r"\}}",  # a large set
    r"\boxed{\frac{1}{0}}",  # division by zero
]


@pytest.mark.parametrize("completion", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_inputs_are_fast_and_safe(completion):
    # returns promptly with 0.0 and does not raise
    start = time.perf_counter()
    assert math_accuracy([completion], answer=["7"], fallback="last_number") == [0.0]
    assert time.perf_counter() - start < 1.0
    assert is_equivalent(completion[:5000], completion[:5000][::-1] + "x") is False


def test_identical_power_tower_compares_as_text():
    # an identical unevaluable answer still matches its gold, quickly
    assert math_accuracy([r"\boxed{9^{9^{9^9}}}"], answer=[r"9^{9^{9^9}}"]) == [1.0]
