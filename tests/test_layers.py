import pytest

from mltp.layers import describe_layers, parse_layers


@pytest.mark.parametrize(
    "spec, L, expected",
    [
        ("all", 4, (1, 2, 3, 4)),
        ("ALL ", 3, (1, 2, 3)),
        ("last4", 30, (27, 28, 29, 30)),
        ("last1", 30, (30,)),
        ("first4", 30, (1, 2, 3, 4)),
        ("middle4", 30, (14, 15, 16, 17)),
        ("middle3", 30, (14, 15, 16)),  # tie rule: L - N odd -> the earlier window
        ("middle2", 5, (2, 3)),
        ("middle5", 5, (1, 2, 3, 4, 5)),
        ("middle1", 30, (15,)),
        ("middle30", 30, tuple(range(1, 31))),
        ("1,5,9", 30, (1, 5, 9)),
        ("9, 1 ,5", 30, (1, 5, 9)),
        ("10-13", 30, (10, 11, 12, 13)),
        ("1,3-5", 30, (1, 3, 4, 5)),
        ("7-7", 30, (7,)),
        ("30", 30, (30,)),
        ([4, 2, 3], 4, (2, 3, 4)),
        ((1,), 1, (1,)),
    ],
)
def test_forms(spec, L, expected):
    assert parse_layers(spec, L) == expected


def test_middle_is_centred_by_hand():
    # Written out independently: the N blocks whose centre is closest to the middle of 1..L,
    # ties to the earlier window.
    for L in range(1, 13):
        middle = (1 + L) / 2
        for N in range(1, L + 1):
            windows = [tuple(range(s, s + N)) for s in range(1, L - N + 2)]
            best = min(windows, key=lambda w: (abs((w[0] + w[-1]) / 2 - middle), w[0]))
            assert parse_layers(f"middle{N}", L) == best, (L, N)


@pytest.mark.parametrize(
    "spec, L, fragment",
    [
        ("bottom4", 30, "unknown form"),
        ("last", 30, "unknown form"),
        ("lastfour", 30, "unknown form"),
        ("last31", 30, "N=31"),
        ("first0", 30, "at least 1"),
        ("middle0", 30, "at least 1"),
        ("0,1", 30, "outside 1..30"),
        ("31", 30, "outside 1..30"),
        ("29-31", 30, "outside 1..30"),
        ("1,1", 30, "more than once"),
        ("1-3,2", 30, "more than once"),
        ("", 30, "empty"),
        ("  ", 30, "empty"),
        ([], 30, "empty"),
        ("5-3", 30, "backwards"),
        ("1,,2", 30, "unknown form"),
        ("-1", 30, "unknown form"),
        ([0, 1], 30, "outside"),
        ([1, 1], 30, "more than once"),
        ([1.0], 30, "ints only"),
        ([True], 30, "ints only"),
    ],
)
def test_errors_name_spec_and_L(spec, L, fragment):
    with pytest.raises(ValueError) as err:
        parse_layers(spec, L)
    message = str(err.value)
    assert fragment in message
    assert repr(spec) in message and f"L={L}" in message


def test_bad_num_layers():
    for L in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_layers"):
            parse_layers("all", L)


def test_describe_layers():
    assert describe_layers("middle4", 30) == "middle4 -> 4 of 30 blocks: 14-17"
    assert describe_layers("1,3-5,9,10", 30) == "1,3-5,9,10 -> 6 of 30 blocks: 1,3-5,9-10"
    assert describe_layers([2, 1], 4) == "2,1 -> 2 of 4 blocks: 1-2"
    with pytest.raises(ValueError):
        describe_layers("last9", 4)
