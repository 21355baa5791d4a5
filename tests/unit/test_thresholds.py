import click
import nagiosplugin
import pytest
from click.testing import CliRunner

from checks.thresholds import Limits, ThresholdType, assign, parse_threshold, range_options
from checks.units import Unit, UnitError


@pytest.mark.parametrize(
    ("text", "unit", "inside", "outside"),
    [
        ("10", Unit.NUMBER, [0, 10], [-1, 11]),
        ("10:", Unit.NUMBER, [10, 1e9], [9.9]),
        ("~:10", Unit.NUMBER, [-1e9, 10], [10.1]),
        ("10:20", Unit.NUMBER, [10, 20], [9, 21]),
        ("@10:20", Unit.NUMBER, [9, 21], [10, 20]),
        ("16MB", Unit.BYTES, [16 * 1024**2], [16 * 1024**2 + 1]),
        ("1MB:1GiB", Unit.BYTES, [1024**2, 1024**3], [1024**2 - 1]),
        ("500ms", Unit.SECONDS, [0.5], [0.51]),
        ("5min", Unit.SECONDS, [300], [301]),
        ("90%", Unit.PERCENT, [90], [90.1]),
        ("0:10MB", Unit.BYTES, [0, 10 * 1024**2], [10 * 1024**2 + 1]),
        ("@0:1s", Unit.SECONDS, [2], [0.5]),
    ],
)
def test_ranges_in_base_units(text, unit, inside, outside) -> None:
    threshold = parse_threshold(text)
    assert threshold.unit is unit
    for value in inside:
        assert threshold.range.match(value), (text, value)
    for value in outside:
        assert not threshold.range.match(value), (text, value)


def test_range_renders_for_perfdata_in_base_units() -> None:
    assert str(parse_threshold("16MB").range) == "16777216"
    assert str(parse_threshold("@1.5s:2min").range) == "@1.5:120"


@pytest.mark.parametrize("text", ["10MB:20s", "20:10", "1:2:3", "", "@", "fast"])
def test_bad_ranges(text: str) -> None:
    with pytest.raises(UnitError):
        parse_threshold(text)


def test_unit_picks_the_metric() -> None:
    limits = assign(
        [parse_threshold("16MB"), parse_threshold("30s")],
        [parse_threshold("1GB")],
        targets={Unit.BYTES: "lag_bytes", Unit.SECONDS: "lag_seconds"},
    )
    assert str(limits["lag_bytes"].warning) == "16777216"
    assert str(limits["lag_bytes"].critical) == "1073741824"
    assert str(limits["lag_seconds"].warning) == "30"
    assert limits["lag_seconds"].critical is None


def test_defaults_fill_what_the_user_left_out() -> None:
    defaults = {"m": Limits(nagiosplugin.Range("1"), nagiosplugin.Range("5"))}
    limits = assign([parse_threshold("2s")], [], targets={Unit.SECONDS: "m"}, defaults=defaults)
    assert (str(limits["m"].warning), str(limits["m"].critical)) == ("2", "5")


def test_plain_number_takes_the_declared_unit() -> None:
    limits = assign(
        [parse_threshold("3")], [], targets={Unit.SECONDS: "t"}, plain_unit=Unit.SECONDS
    )
    assert str(limits["t"].warning) == "3"


def test_wrong_unit_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter, match=r"bytes \(16MB\) or seconds \(30s\)"):
        assign([parse_threshold("90%")], [], targets={Unit.BYTES: "b", Unit.SECONDS: "s"})


def test_same_unit_twice_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter, match="second seconds threshold"):
        assign([parse_threshold("1s"), parse_threshold("2s")], [], targets={Unit.SECONDS: "s"})


def test_param_type_enforces_its_unit() -> None:
    kind = ThresholdType(unit=Unit.SECONDS)
    assert kind.convert("30s", None, None).unit is Unit.SECONDS
    with pytest.raises(click.BadParameter, match="must be in seconds"):
        kind.convert("30MB", None, None)


def test_given_limits_fall_back_per_level() -> None:
    default = Limits(nagiosplugin.Range("5"), nagiosplugin.Range("9"))
    limits = Limits.given(None, parse_threshold("7"), default)
    assert (str(limits.warning), str(limits.critical)) == ("5", "7")
    assert Limits.given(None, None) == Limits()


def test_range_options_make_a_documented_pair() -> None:
    @click.command()
    @range_options("idle", ThresholdType(unit=Unit.SECONDS), "idle time", default_warning="5min")
    def cmd(idle_warning, idle_critical) -> None:
        click.echo(f"{idle_warning.range if idle_warning else None} {idle_critical}")

    result = CliRunner().invoke(cmd, ["--idle-warning", "2min"])
    assert result.output == "120 None\n"
    help_text = CliRunner().invoke(cmd, ["--help"]).output
    assert "Warning range for idle time (default: 5min)." in help_text
    assert "Critical range for idle time." in help_text
